"""The results writer: the table, RESULTS.json (merged per scenario) and RESULTS.md
with the standing notes."""

import json
import os
import platform
import re
import subprocess

from harness import HERE, log
from servers.garage import garage_binary
from servers.kube import kube_versions


def metric_key(row):
    """A row's identity across runs: its scenario and its metric's words before any detail."""
    return row[0], row[1].split(" (")[0].split(":")[0]


def merged(json_path, doc, rows, notes, asked):
    """The saved run with the scenarios measured now (`asked`, --only) replacing its rows of
    them (--merge): the other rows, notes and figures stay as they were, and meta["merged"]
    says which rows came from this later run and under what conditions. A scenario that
    measures a row of another (S7 times S1's secrets variant) replaces only that row."""
    with open(json_path) as f:
        old = json.load(f)
    ran = {r[0] for r in rows} & asked
    extra = {metric_key(r) for r in rows if r[0] not in ran}
    order = lambda r: int(re.sub(r"\D", "", r[0]) or 0)  # noqa: E731
    kept = [r for r in old["rows"] if r[0] not in ran and metric_key(r) not in extra]
    out_rows = sorted(kept + [list(r) for r in rows], key=order)  # stable: each scenario's own order
    # The old run's own notes (not standing ones) about scenarios not run now, then the standing ones.
    # (An old standing note whose text changed since has a current one with the same opening.)
    out_notes = [n for n in old["notes"] if n not in STANDING_NOTES and not any(n.startswith(s) for s in ran)
                 and not any(n[:25] == m[:25] for m in STANDING_NOTES)]
    out_notes += [n for n in notes if n not in STANDING_NOTES] + list(STANDING_NOTES)
    meta = dict(old["meta"])
    meta["merged"] = [m for m in meta.get("merged", []) if not set(m["scenarios"]) & ran] + [{
        "scenarios": sorted(ran, key=lambda s: int(re.sub(r"\D", "", s) or 0)),
        "date": doc["meta"]["date"], "minutes": doc["meta"]["minutes"],
        "load_before": doc["meta"]["load_before"], "load_after": doc["meta"]["load_after"],
        "converge": doc["meta"]["versions"]["converge"], "runs": doc["meta"]["runs"],
        "kubernetes": doc["meta"]["versions"].get("kubernetes (S8)")}]
    details = dict(old["details"])
    details.update(doc["details"])
    return {"meta": meta, "rows": out_rows, "notes": out_notes, "details": details}


def render(doc, path):
    """RESULTS.md from the saved run (bench/RESULTS.json) and bench/ANALYSIS.md."""
    meta = doc["meta"]
    header = ["scenario", "metric", "converge", "peer (same run)", "ratio", "target", "verdict"]
    md = [
        "# Benchmark results",
        "",
        "Written by `bench/run` (do not edit by hand: the analysis lives in "
        "[`ANALYSIS.md`](ANALYSIS.md) and is appended below; the raw figures are in "
        "[`RESULTS.json`](RESULTS.json)). Scenarios, peers and targets: `shared/PERFORMANCE.md`. "
        "Peers run in the same invocation, interleaved with converge; ratios are converge ÷ peer "
        "(lower is better for times, higher for throughput).",
        "",
        f"- date: {meta['date']}, total {meta['minutes']} min",
        f"- machine: {meta['machine']}",
        f"- load average (1/5/15 min) before: {' '.join(meta['load_before'])}, "
        f"after: {' '.join(meta['load_after'])}",
        f"- workload: {meta['n']} claims, seed {meta['seed']} (`bench/gen.py`), {meta['runs']} runs per "
        "figure unless stated (min and median), peak RSS from `/usr/bin/time -v`",
        "- versions: " + "; ".join(f"{k}: {val}" for k, val in meta["versions"].items()),
    ]
    for m in meta.get("merged", []):
        md.append(f"- {', '.join(m['scenarios'])}: measured later, on their own (`--only {','.join(m['scenarios'])} "
                  f"--merge`): {m['date']}, {m['minutes']} min, load average before {' '.join(m['load_before'])}, "
                  f"after {' '.join(m['load_after'])}; {m['converge']}"
                  + (f"; {m['kubernetes']}" if m.get("kubernetes") else "")
                  + "; their rows replace that scenario's rows of the run above, the rest is that run's")
    md += [
        "",
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
    ]
    for r in doc["rows"]:
        md.append("| " + " | ".join(str(c).replace("|", "\\|") for c in r) + " |")
    md += ["", "## How each figure is taken", ""]
    md += [f"- {n}" for n in doc["notes"]]
    analysis = os.path.join(HERE, "ANALYSIS.md")
    if os.path.exists(analysis):
        with open(analysis) as f:
            md += ["", f.read().rstrip()]
    with open(path, "w") as f:
        f.write("\n".join(md) + "\n")
    log(f"wrote {path}")


STANDING_NOTES = [
    "S1 `plan` is `converge plan` (text output, ~15 MB for 10k creates) on an empty target (every "
    "environment is a create); the JSON plan of the same run is checked once for correctness. "
    "`run --once` also writes the manifests (~34 files per environment here, synced in four `syncfs` "
    "barriers at this commit) into an emptied directory. The git variant is a cold `plan` with an empty state dir: mirror clone over "
    "`git daemon` on loopback, then every blob read.",
    "S1 peers: `ajv validate --spec=draft2020 -c ajv-formats` over the same files (schema only) plus "
    "`cedar run-tests` of the same 10k requests, each with its entity slice (user, pools, environment) "
    "and no schema (the cheapest way to run them through the CLI). The peer figure is ajv + cedar.",
    "S2: after a push, the API of the environment is polled every 2 ms until it serves the new version; "
    "t0 is the start of the pass that picked the commit up (its `pass done` log time minus its "
    "duration_ms), so the figure runs from the poll that sees the commit (ref check, fetch, tree diff, "
    "evaluation, plan, apply of the one environment, redb commit) to the rebuilt API view. The wait for "
    "the next 1 s poll is not included (that is S4). The counters are `converge_claims_*_total` deltas "
    "over the push; `converge_pass_ready_seconds` (sum / count deltas) is the daemon's own pass start → "
    "view swap, a cross-check of the same span (from the pass start, after the poll's ref check and fetch) on the "
    "daemon's clock. The peer fetches the same commit into a bare clone and lists it with `git diff-tree`.",
    "S3 divides the daemon's CPU time (utime + stime from /proc/PID/stat, 10 ms ticks) over the idle window "
    "by the number of polls, `converge_source_polls_total` read at both ends of the window (no scrapes in "
    "between; builds without it: changes of `converge_source_last_success_timestamp_seconds` sampled every "
    "0.4 s, the scrapes' CPU measured separately and subtracted). An idle poll runs no pass "
    "(`converge_passes_total` stays put). Git blob reads, fetches and ref checks per poll come from "
    "`converge_git_*_total`. The peer is a no-op `git fetch` (ref advertisement, nothing to fetch).",
    "S3 (bucket): the N JSON claims are PUT (SigV4, 16 at a time) into a bucket of a one-node Garage on "
    "loopback (sqlite metadata, started and provisioned as tests/it/support/garage.rs does); the daemon polls it through an "
    "`s3` source every 1 s (path-style, key files). After its first pass (`/ready`), the window starts just after "
    "a poll completes (`converge_source_polls_total` seen to move, scraped every 20 ms) and lasts `--idle` "
    "seconds; LIST and GET calls are `converge_s3_requests_total{op=\"list\"|\"get\"}` deltas (every attempt, "
    "retries included) divided by the polls, the counters read again just after the first poll that ends past "
    "the window, so every poll counted is whole. The target is exact: ⌈keys/1000⌉ LISTs per poll (ListObjectsV2 "
    "pages of 1,000 keys), no GET, no source error, no claim parsed. The CPU per poll is taken as for git (the "
    "daemon's utime + stime over the window, no scrape in between, ÷ the polls in it); PERFORMANCE.md sets no "
    "CPU target for it and there is no peer. Without a Garage binary ($GARAGE_BIN, PATH or "
    "~/.cache/converge-test-tools/bin, where bench/run and scripts/test install it) the row says so.",
    "S4 polling: pushes at random phases against the 10 s timer; latency is from `git push` returning "
    "to the environment's Deployment file on disk holding the new tag. Triggered: an atomic rename into "
    "the watched dir source to the same file check.",
    "S5: `wrk -t1 -c32 -d5s` on loopback against the daemon and against nginx (worker_processes auto, "
    "keepalive) serving the same body bytes from a file, alternated. \"During S1\" runs `converge plan` "
    "on the 10k JSON claims in a loop beside both servers.",
    "S6: steady VmRSS of daemons on a dir source: at 1k, three fresh daemons after their first pass, ten "
    "one-claim passes (a comment appended each time) and 3 s of rest; at 10k, the one fresh daemon (a cold "
    "start applies ~340k files, so it is started once) after S4-triggered's ten one-claim passes, S5's load "
    "and 3 s of rest. Slope = difference / 9,000. The RSS right after the first pass is reported too: "
    "mimalloc gives the cold start's memory back only gradually.",
    "S7: the 10k YAML claims with one secret each, encrypted in sops's format (a fresh data key per file, "
    "wrapped for one age recipient) by bench/sopsgen.py, since the sops CLI takes tens of ms a file; the "
    "peer, `sops --decrypt` per file (the real CLI, from scripts/tools), decrypts and MAC-checks a sample "
    "(--s7-peer files), which also proves the format. Cold decrypt cost = median plan wall with secrets "
    "minus the same claims without. The S1 row 'YAML + one SOPS secret' is that plan's wall. Warm: a daemon "
    "on 1k of the claims, X25519 unwraps counted by converge_secrets_key_unwraps_total before and after "
    "a one-claim pass (a comment appended: the file is decrypted again, its data key comes from the cache).",
    "S8: the first `--s8-envs` claims (default $S8_ENVS, else 200; the issue's figure is 1,000) are rendered "
    "once by converge's manifests target (`run --once` into a directory); those `.yaml` files (not "
    "the inventory file) are what kubectl and the floor send. Every peer, every round, gets a "
    "fresh etcd + kube-apiserver + kube-controller-manager (namespace and garbage-collector controllers) on "
    "loopback, started from scripts/tools' builds with the flags of tests/it/support/kube.rs (TLS, "
    "static admin token, RBAC), so no peer sees another's objects; the peers' order rotates per round. "
    "converge: `run --once` (release) with `target: {kind: kubernetes, concurrency: 8, inventory_namespace: "
    "converge-system}` and the admin kubeconfig. kubectl: `kubectl apply --server-side -R -f DIR` with a fresh "
    "discovery cache; DIR holds the Namespaces in a first subdirectory (kubectl applies files in path order "
    "and a namespaced object needs its Namespace). Floor: a Python client (http.client over TLS, one kept-alive "
    "connection per thread, 8 threads) sending each file's bytes as a server-side apply PATCH "
    "(application/apply-patch+yaml, fieldManager, force=true), Namespaces first, then everything else; the "
    "resource paths come from discovery before the clock starts. Every cold apply is checked afterwards "
    "(a LIST per kind: every object present with converge's labels). Throughput = objects ÷ wall. The "
    "requests are `apiserver_request_total` deltas by verb and resource (the scrape itself taken off; "
    "non-resource GETs such as discovery and /metrics are not object reads); the API server's own requests "
    "(its identity lease renewal, an IPAddress POSTed per Service created, events) are shown apart. \"In "
    "flight\" is Little's law: the `apiserver_request_duration_seconds` sum over the window ÷ the wall. "
    "The one-claim change edits a claim's exact service version; the time runs from just before `run --once` "
    "is started to the Deployment's new image arriving on a watch opened beforehand (so process start, "
    "reading the claims, the inventory LIST and the apply are all in it). The daemon (`converge run`, same "
    "config and cluster) then runs: this cluster has no kubelet and no deployment controller, so Deployments "
    "never roll out; a daemon that re-runs its pass while its environments are Reconciling (every 2 s at "
    "237dc36, until `health_timeout`) makes idle passes, counted from its `pass done` log lines (read from "
    "the file, so the window has no scrapes of the daemon), with its CPU (utime + stime) and the API "
    "requests over whole passes; a daemon that runs no pass without a change gets a window of "
    "`--s8-idle` seconds instead, and the row says no pass ran. Finally one-claim saves (atomic renames) into its watched claims "
    "directory, timed to the watch event. The diagnosis row is one extra cold apply at 4× the concurrency. "
    "The drift sweep is not measured yet: drift detection was not built in the commit S8 was written "
    "against (237dc36).",
]


class Report:
    # -- report -----------------------------------------------------------
    def versions(self):
        garage = garage_binary(self.a.garage)
        def out(cmd):
            try:
                p = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
                return (p.stdout + p.stderr).strip().splitlines()[0]
            except Exception as e:  # noqa: BLE001
                return f"unavailable ({e})"
        ajv_pkg = os.path.join(os.path.dirname(os.path.dirname(os.path.realpath(self.a.ajv))), "package.json")
        try:
            ajv_version = "ajv-cli " + json.load(open(ajv_pkg))["version"]
        except Exception:  # noqa: BLE001
            ajv_version = "ajv-cli (version unknown)"
        return {
            "converge": out([self.bin, "--version"]) + f" (commit {self.commit})",
            "rustc": out(["rustc", "--version"]),
            "ajv": ajv_version + ", " + out(["node", "--version"]).replace("v", "node ", 1),
            "cedar": out([self.a.cedar, "--version"]),
            "git": out(["git", "--version"]),
            "nginx": out([self.a.nginx, "-v"]),
            "wrk": out([self.a.wrk, "--version"]).split(" [")[0],
            "garage": out([garage, "--version"]).split(" [")[0] if garage else "not installed",
            "kubernetes (S8)": kube_versions(),
        }

    def machine(self):
        cpu = "unknown"
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
        with open("/proc/meminfo") as f:
            mem = int(f.readline().split()[1]) // 1024
        return f"{platform.system()} {platform.release()}, {os.cpu_count()} × {cpu}, {mem} MiB RAM"

    def report(self, started, load_before, load_after, elapsed):
        header = ["scenario", "metric", "converge", "peer (same run)", "ratio", "target", "verdict"]
        widths = [max(len(str(r[i])) for r in self.rows + [header]) for i in range(7)]
        widths = [min(w, 70) for w in widths]
        print()
        print("  ".join(h.ljust(w) for h, w in zip(header, widths)))
        for r in self.rows:
            print("  ".join(str(c).ljust(w) for c, w in zip(r, widths)))
        print()
        meta = {
            "date": started.strftime("%Y-%m-%d %H:%M UTC"), "minutes": round(elapsed / 60, 1),
            "machine": self.machine(), "load_before": load_before, "load_after": load_after,
            "n": self.a.n, "seed": self.a.seed, "runs": self.a.runs, "versions": self.versions(),
        }
        doc = {"meta": meta, "rows": self.rows, "notes": self.notes + STANDING_NOTES, "details": self.details}
        json_path = os.path.splitext(self.a.results)[0] + ".json"
        os.makedirs(os.path.dirname(os.path.abspath(json_path)), exist_ok=True)
        if self.a.merge and os.path.exists(json_path):
            asked = {x.strip().upper() for x in self.a.only.split(",") if x.strip()}
            doc = merged(json_path, doc, self.rows, self.notes, asked)
        with open(json_path, "w") as f:
            json.dump(doc, f, indent=1, default=str)
        render(doc, self.a.results)
