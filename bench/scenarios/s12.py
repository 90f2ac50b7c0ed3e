"""S12: plans on pull requests, against a real Gitea with 100 open pull requests."""

import json
import os
import statistics
import subprocess
import time
import urllib.request

from harness import fresh_dir, log, metric, summary
from servers.daemon import Daemon
from servers.gitea import Gitea, gitea_bin


def claim(name):
    return (f"user: john.doe@company.com\nenvironment_pool: team1\ncreation_date: \"2024-01-15T10:30:00Z\"\n"
            f"environment_name: {name}\nenvironment_type: dev\nexpiration_date: null\n"
            f"deployment_method: dynamic\nservices:\n  user-service: v1.2.3\n")


def git(cwd, *args):
    subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True)


def git_out(cwd, *args):
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True).stdout.strip()


class S12:
    # -- S12 --------------------------------------------------------------
    def s12(self):
        """Plans on pull requests (issue 24): 100 open PRs on a real Gitea; requests and CPU per
        idle poll (conditional listing, nothing written), push -> comment latency."""
        a = self.a
        if not os.path.isfile(gitea_bin()):
            self.row("S12", "plans on pull requests", f"not measured: {gitea_bin()} missing", "", "", "", "n/a")
            return
        run = fresh_dir(os.path.join(self.run, "s12"))
        gitea = Gitea(os.path.join(run, "gitea"))
        try:
            out = self.s12_measure(run, gitea)
        finally:
            gitea.stop()
        self.details["S12"] = out
        interval = a.s12_interval
        self.row("S12", f"idle poll, {a.s12_prs} open PRs: forge requests per poll",
                 f"{out['idle']['requests_per_poll']:.2f}", "", "", "<= 2",
                 "pass" if out["idle"]["requests_per_poll"] <= 2 else "FAIL")
        self.row("S12", "idle poll: comments or statuses written", str(out["idle"]["writes"]), "", "", "0",
                 "pass" if out["idle"]["writes"] == 0 else "FAIL")
        self.row("S12", "idle poll: daemon CPU per poll", f"{out['idle']['cpu_ms_per_poll']:.1f} ms", "", "", "", "")
        p = out["push_to_comment_s"]
        self.row("S12", "PR push -> plan comment edited (p50 / max)", f"{p['p50']:.2f} s / {p['max']:.2f} s",
                 "Atlantis: a full plan per PR", "", f"<= {interval + 1} s (interval + 1 s)",
                 "pass" if p["max"] <= interval + 1 else "FAIL")
        self.row("S12", f"cold start: {a.s12_prs} PRs planned, commented and statused",
                 f"{out['cold_s']:.1f} s", "", "", "", "")

    def s12_measure(self, run, gitea):
        a = self.a
        n = a.s12_prs
        url = gitea.repo("claims")
        work = os.path.join(run, "work")
        git(run, "clone", "-q", gitea.push_url("admin", "claims"), work)
        for k, v in (("user.name", "Bench"), ("user.email", "admin@company.com"), ("commit.gpgsign", "false")):
            git(work, "config", k, v)
        os.makedirs(os.path.join(work, "environments"))
        for i in range(10):
            with open(os.path.join(work, "environments", f"dev-main-{i}.yaml"), "w") as f:
                f.write(claim(f"dev-main-{i}"))
        git(work, "add", "-A")
        git(work, "commit", "-q", "-m", "claims")
        git(work, "push", "-q", "origin", "HEAD:refs/heads/main")
        log(f"S12: {n} branches and pull requests")
        refspecs = []
        for i in range(n):
            git(work, "checkout", "-q", "-B", f"pr-{i}", "main")
            with open(os.path.join(work, "environments", f"dev-pr-{i}.yaml"), "w") as f:
                f.write(claim(f"dev-pr-{i}"))
            git(work, "add", "-A")
            git(work, "commit", "-q", "-m", f"dev-pr-{i}")
            refspecs.append(f"pr-{i}:refs/heads/pr-{i}")
        git(work, "push", "-q", gitea.push_url("author", "claims"), *refspecs)
        for i in range(n):
            gitea.call("author", "POST", "/repos/admin/claims/pulls",
                       {"head": f"pr-{i}", "base": "main", "title": f"dev-pr-{i}"})
        with open(os.path.join(run, "forge-token"), "w") as f:
            f.write(gitea.tokens["admin"])
        cfg = os.path.join(run, "converge.yaml")
        with open(cfg, "w") as f:
            f.write(f"""sources:
  - name: claims
    kind: git
    url: {json.dumps(url)}
    branch: main
    paths: ["environments/**/*.yaml"]
    interval: {a.s12_interval}s
    forge:
      kind: gitea
      token_file: {json.dumps(os.path.join(run, 'forge-token'))}
      pull_requests: true
      commit_statuses: false
      context: bench
target:
  kind: manifests
  path: {json.dumps(os.path.join(run, 'out'))}
state_dir: {json.dumps(os.path.join(run, 'state'))}
""")
        d = Daemon(self.bin, cfg, os.path.join(run, "daemon.log"))
        try:
            d.wait_ready()

            def pulls():
                with urllib.request.urlopen(d.url + "/api/v1/sources", timeout=5) as r:  # noqa: S310
                    return json.loads(r.read())["items"][0]["pull_requests"]

            t0 = time.perf_counter()
            deadline = time.time() + 900
            while pulls()["planned"] < n:
                if time.time() > deadline:
                    raise RuntimeError(f"S12: {pulls()} after 15 minutes")
                time.sleep(0.2)
            cold = time.perf_counter() - t0
            log(f"S12: {n} PRs planned in {cold:.1f} s")
            # Idle: nothing changes; count what each poll costs.
            time.sleep(a.s12_interval + 1)
            writes_ops = ("create_comment", "edit_comment", "set_status", "list_comments")

            def sample():
                # Right after a poll ends (the next is an interval away), so
                # no poll is half counted.
                before = pulls()["polls"]
                while pulls()["polls"] == before:
                    time.sleep(0.05)
                m = d.metrics()
                total = metric(m, "converge_forge_requests_total")
                writes = sum(metric(m, "converge_forge_requests_total", op=op) for op in writes_ops)
                return pulls()["polls"], total, writes, d.cpu_seconds()

            polls0, req0, w0, cpu0 = sample()
            while pulls()["polls"] < polls0 + a.s12_idle_polls:
                time.sleep(0.2)
            polls1, req1, w1, cpu1 = sample()
            polls = polls1 - polls0
            idle = {"polls": polls, "requests_per_poll": (req1 - req0) / polls, "writes": int(w1 - w0),
                    "cpu_ms_per_poll": (cpu1 - cpu0) * 1000 / polls}
            log(f"S12 idle: {idle}")
            # Push -> comment: a new head on one PR, the comment edited with it.
            latencies = []
            number = gitea.call("admin", "GET", "/repos/admin/claims/pulls?state=open&limit=1")[0]["number"]
            branch = gitea.call("admin", "GET", f"/repos/admin/claims/pulls/{number}")["head"]["ref"]
            for k in range(a.s12_pushes):
                git(work, "checkout", "-q", branch)
                path = os.path.join(work, "environments", f"{branch.replace('pr-', 'dev-pr-')}.yaml")
                with open(path, "w") as f:
                    f.write(claim(os.path.basename(path)[:-5]).replace("v1.2.3", f"v1.2.{10 + k}"))
                git(work, "commit", "-q", "-am", f"push {k}")
                head = git_out(work, "rev-parse", "HEAD")
                git(work, "push", "-q", gitea.push_url("author", "claims"), f"HEAD:refs/heads/{branch}")
                t0 = time.perf_counter()
                deadline = time.time() + 120
                while True:
                    comments = gitea.call("admin", "GET", f"/repos/admin/claims/issues/{number}/comments")
                    if any(head[:12] in c["body"] for c in comments):
                        break
                    if time.time() > deadline:
                        raise RuntimeError("S12: no comment for the push in 2 minutes")
                    time.sleep(0.05)
                latencies.append(time.perf_counter() - t0)
                log(f"S12 push {k + 1}/{a.s12_pushes}: comment edited {latencies[-1]:.2f} s after the push")
            return {"prs": n, "interval_s": a.s12_interval, "cold_s": cold, "idle": idle,
                    "push_to_comment_s": {**summary(latencies), "p50": statistics.median(latencies),
                                          "max": max(latencies)}}
        finally:
            d.stop()
