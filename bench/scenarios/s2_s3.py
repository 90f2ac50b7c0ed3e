"""S2 (one-claim change through git) and S3 (idle git polls), on one daemon."""

import os
import resource
import subprocess
import time

from harness import GIT_ENV, fast_import_commit, fresh_dir, log, mutable_claims, mutate, summary, wait_for_api, wait_for_log, write_config
from servers.daemon import Daemon


class S2S3:
    # -- S2 + S3 (daemon on a git source, 1 s polls) -----------------------
    def s2_s3(self):
        a = self.a
        log("S2/S3: daemon on a git source over git daemon, 1 s polls")
        run = fresh_dir(os.path.join(self.run, "s2"))
        repo = self.rw_repo("envs")
        pusher = os.path.join(run, "pusher.git")
        subprocess.run(["git", "clone", "-q", "--bare", repo, pusher], check=True, env=GIT_ENV)
        peer_repo = os.path.join(run, "peer.git")
        subprocess.run(["git", "clone", "-q", "--bare", self.git.url("envs.git"), peer_repo], check=True, env=GIT_ENV)
        cfg = write_config(os.path.join(run, "c.yaml"), [self.git_source("envs.git", "1s")], run, self.tags)
        d = Daemon(self.bin, cfg, os.path.join(run, "daemon.log"))
        try:
            ready = d.wait_ready()
            self.details.setdefault("daemon", {})["git_first_ready_s"] = ready
            log(f"S2: daemon ready after {ready:.1f} s")
            time.sleep(2)
            names = mutable_claims(os.path.join(self.w, "claims-yaml"), a.runs, a.seed + 2)
            paths = {}
            ls = subprocess.run(["git", "-C", pusher, "ls-tree", "-r", "--name-only", "main"], capture_output=True,
                                text=True, check=True, env=GIT_ENV).stdout.split()
            for p in ls:
                paths[os.path.basename(p)] = p
            samples = []
            for k, name in enumerate(names):
                with open(os.path.join(self.w, "claims-yaml", name)) as f:
                    text, service, tag = mutate(f.read(), k)
                fast_import_commit(pusher, paths[name], text, f"bench: {name} {service} {tag}")
                before = d.metrics()
                offset = os.path.getsize(d.logfile)
                subprocess.run(["git", "-C", pusher, "push", "-q", repo, "main"], check=True, env=GIT_ENV)
                pushed = time.time()
                env_url = f"{d.url}/api/v1/environments/{name.rsplit('.', 1)[0]}"
                ready_at = wait_for_api(env_url, tag, 30)
                done = wait_for_log(d.logfile, offset, lambda f: f.get("message") == "pass done"
                                    and f.get("parsed", 0) >= 1, 30)
                after = d.metrics()
                # The ready histogram is observed when `Daemon::pass` returns,
                # just after the view swap (the pass's temporaries are dropped
                # in between): give it a moment.
                count = "converge_pass_ready_seconds_count"
                deadline = time.time() + 2
                while count in after and after[count] <= before.get(count, 0) and time.time() < deadline:
                    time.sleep(0.005)
                    after = d.metrics()
                # The pass began when the poll that saw the commit started:
                # its `pass done` time minus its duration.
                started = done["time"] - done["duration_ms"] / 1000
                delta = {c: after[f"converge_claims_{c}_total"] - before[f"converge_claims_{c}_total"]
                         for c in ("parsed", "validated", "authorized", "rendered")}
                # Cross-check: the daemon's own pass start → API serving it
                # (`converge_pass_ready_seconds`, after the state commit and
                # the view swap), averaged over the passes of this push.
                ready_n = (after.get("converge_pass_ready_seconds_count", 0)
                           - before.get("converge_pass_ready_seconds_count", 0))
                ready_sum = (after.get("converge_pass_ready_seconds_sum", 0)
                             - before.get("converge_pass_ready_seconds_sum", 0))
                pass_ready_ms = ready_sum * 1000 / ready_n if ready_n else None
                # The peer: fetch the one new commit and list what it changed.
                t0 = time.perf_counter()
                subprocess.run(["git", "-C", peer_repo, "fetch", "-q", "origin", "+main:main"], check=True, env=GIT_ENV,
                               stdout=subprocess.DEVNULL)
                subprocess.run(["git", "-C", peer_repo, "diff-tree", "-r", "--name-only", "main~1", "main"], check=True,
                               env=GIT_ENV, stdout=subprocess.DEVNULL)
                peer_s = time.perf_counter() - t0
                samples.append({"ready_ms": (ready_at - started) * 1000, "pass_ms": done["duration_ms"],
                                "pass_ready_ms": pass_ready_ms, "pass_ready_passes": ready_n,
                                "push_to_ready_s": ready_at - pushed, "peer_ms": peer_s * 1000, **delta})
                shown = "n/a" if pass_ready_ms is None else f"{pass_ready_ms:.0f} ms"
                log(f"S2 run {k + 1}: poll start → API shows {tag}: {samples[-1]['ready_ms']:.0f} ms "
                    f"(pass log {done['duration_ms']} ms, pass_ready metric {shown}), counters {delta}, "
                    f"peer {peer_s * 1000:.1f} ms")
                time.sleep(0.3)
            self.details["S2"] = samples
            ours = summary([s["ready_ms"] for s in samples])
            inner = summary([s["pass_ms"] for s in samples])
            peer = summary([s["peer_ms"] for s in samples])
            exact = all(s[c] == 1 for s in samples for c in ("parsed", "validated", "authorized", "rendered"))
            self.row("S2", "one-claim commit: commit visible → plan ready (from the poll that sees it to the "
                     "API serving the new version), min / median",
                     f"{ours['min']:.1f} / {ours['median']:.1f} ms",
                     f"git fetch + diff-tree: {peer['min']:.1f} / {peer['median']:.1f} ms",
                     f"{ours['median'] / peer['median']:.2f}×", "≤ 50 ms",
                     "met" if ours["median"] <= 50 else "MISSED")
            self.row("S2", "of which the pass up to its `pass done` log line (ref check → apply; "
                     "before the redb commit and the API view rebuild), min / median",
                     f"{inner['min']:.0f} / {inner['median']:.0f} ms", "", "", "", "")
            ready_ms = [s["pass_ready_ms"] for s in samples if s["pass_ready_ms"] is not None]
            if ready_ms:
                rm = summary(ready_ms)
                self.row("S2", "cross-check: `converge_pass_ready_seconds` (pass start → state committed and "
                         "view swapped, the daemon's own clock; mean per push), min / median",
                         f"{rm['min']:.1f} / {rm['median']:.1f} ms", "", "", "", "")
            counts = [f"{s['parsed']:.0f}/{s['validated']:.0f}/{s['authorized']:.0f}/{s['rendered']:.0f}"
                      for s in samples]
            self.row("S2", "claims parsed / validated / authorized / rendered, per commit in push order "
                     "(the first is the first pass with a change after the daemon's start)",
                     ", ".join(counts), "", "", "exactly 1/1/1/1", "met" if exact else "MISSED")

            # S3: idle polls of the unchanged repository. An idle poll runs no
            # pass; polls are counted by `converge_source_polls_total` and the
            # git work by `converge_git_*_total`, read only at both ends of the
            # window (no scrapes in between). A binary without those metrics
            # falls back to counting changes of the last-success timestamp,
            # sampled every 0.4 s, with the scrapes' CPU measured and subtracted.
            log(f"S3: {a.idle}s of idle 1 s polls")
            time.sleep(1.5)
            key = 'converge_source_last_success_timestamp_seconds{source="envs"}'
            polls_key = 'converge_source_polls_total{source="envs"}'
            git_keys = {w: f'converge_git_{w}_total{{source="envs"}}' for w in ("ref_checks", "fetches", "blob_reads")}
            counted = polls_key in d.metrics()
            scrape_cpu = 0.0
            if not counted:
                c0 = d.cpu_seconds()
                for _ in range(100):
                    d.metrics()
                scrape_cpu = (d.cpu_seconds() - c0) / 100
            m0, c0, t0 = d.metrics(), d.cpu_seconds(), time.perf_counter()
            seen, scrapes = {m0.get(key)}, 1
            if counted:
                time.sleep(a.idle)
            while not counted and time.perf_counter() - t0 < a.idle:
                time.sleep(0.4)
                seen.add(d.metrics().get(key))
                scrapes += 1
            c1, t1 = d.cpu_seconds(), time.perf_counter()
            m1 = d.metrics()
            scrapes += 1
            seen.add(m1.get(key))
            if counted:
                polls = int(m1[polls_key] - m0[polls_key])
                work = {w: m1.get(k, 0) - m0.get(k, 0) for w, k in git_keys.items()}
                cpu = max(0.0, c1 - c0)
            else:
                polls = len(seen) - 1
                work = None
                cpu = max(0.0, c1 - c0 - scrapes * scrape_cpu)
            passes = m1["converge_passes_total"] - m0["converge_passes_total"]
            parsed = m1["converge_claims_parsed_total"] - m0["converge_claims_parsed_total"]
            # The peer: a no-op `git fetch` of the unchanged repository.
            peer_cpu = []
            for _ in range(a.runs):
                r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
                subprocess.run(["git", "-C", peer_repo, "fetch", "-q", "origin", "+main:main"], env=GIT_ENV,
                               check=True)
                r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
                peer_cpu.append((r1.ru_utime + r1.ru_stime - r0.ru_utime - r0.ru_stime) * 1000)
            ps = summary(peer_cpu)
            per_poll = cpu * 1000 / max(polls, 1)
            self.details["S3"] = {"seconds": t1 - t0, "polls": polls, "passes": passes, "cpu_s": cpu,
                                  "cpu_ms_per_poll": per_poll, "scrapes": scrapes, "polls_counted": counted,
                                  "scrape_cpu_ms": scrape_cpu * 1000, "parsed": parsed, "git_work": work,
                                  "peer_cpu_ms": peer_cpu, "rss_kib": d.status("VmRSS")}
            self.row("S3", f"idle git poll, {a.n // 1000}k claims: daemon CPU per poll ({polls} polls and "
                     f"{passes:.0f} passes in {t1 - t0:.0f} s; daemon CPU in 10 ms ticks)",
                     f"{per_poll:.1f} ms",
                     f"no-op git fetch: {ps['median']:.1f} ms CPU", f"{per_poll / ps['median']:.2f}×", "≤ 2 ms CPU",
                     "met" if per_poll <= 2 else "MISSED")
            if work is not None:
                per = {w: v / max(polls, 1) for w, v in work.items()}
                self.row("S3", "idle git poll: git blob reads / fetches / ref checks per poll "
                         "(`converge_git_*_total`), claims parsed in the window",
                         f"{per['blob_reads']:.2f} / {per['fetches']:.2f} / {per['ref_checks']:.2f}; "
                         f"{parsed:.0f} parsed", "", "", "0 blob reads",
                         "met" if work["blob_reads"] == 0 and parsed == 0 else "MISSED")
            else:
                self.row("S3", "idle git poll: claims parsed (blob reads are not exposed by this build)",
                         f"{parsed:.0f}", "", "", "0 blob reads", "met (0 parsed)" if parsed == 0 else "MISSED")
        finally:
            d.stop()
        return run, repo, pusher
