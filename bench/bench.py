#!/usr/bin/env python3
"""converge benchmarks: scenarios S1-S9 of shared/PERFORMANCE.md against their
peers, measured in the same invocation. Run through `bench/run` (which installs
the peers and builds converge); see bench/README.md.

Everything runs on loopback; every server started here binds 127.0.0.1 on a
free port and is stopped on exit (normal, error or signal). Only the Python
standard library is used.

The files: harness.py (processes, measuring, workload, waits), servers/ (one
file per server the scenarios start), scenarios/ (one file per scenario, each
a part of `Bench`), results.py (the results writer).
"""

import argparse
import datetime
import json
import os
import sys
import time

import harness  # noqa: F401  (puts bench/ on sys.path, stops children on exit)
from harness import HERE, loadavg, log
from results import Report, render
from scenarios.base import Base
from scenarios.s1 import S1
from scenarios.s10 import S10
from scenarios.s12 import S12
from scenarios.s2_s3 import S2S3
from scenarios.s3_bucket import S3Bucket
from scenarios.s4 import S4
from scenarios.s5_s6 import S5S6
from scenarios.s7 import S7
from scenarios.s8 import S8
from scenarios.s9 import S9


class Bench(Base, S1, S2S3, S3Bucket, S4, S5S6, S7, S8, S9, S10, S12, Report):
    """The scenarios of one invocation, sharing a run directory and a workload."""


def main():
    ap = argparse.ArgumentParser(description="converge benchmarks (S1-S8)")
    ap.add_argument("--bin", required=True, help="the converge binary (a release build)")
    ap.add_argument("--ajv", required=True)
    ap.add_argument("--cedar", required=True)
    ap.add_argument("--nginx", default="/usr/sbin/nginx")
    ap.add_argument("--wrk", default="wrk")
    ap.add_argument("--work", default=os.path.expanduser("~/.cache/converge-bench/work"),
                    help="where the generated workload is kept between runs")
    ap.add_argument("--n", type=int, default=10_000)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--pushes", type=int, default=10)
    ap.add_argument("--idle", type=int, default=20, help="seconds of idle polling for S3")
    ap.add_argument("--garage", default=None,
                    help="the Garage binary for S3 (bucket); default $GARAGE_BIN, PATH, then scripts/test's "
                         "~/.cache/converge-test-tools/bin/garage")
    ap.add_argument("--rss-runs", type=int, default=3, help="fresh 1k daemons for S6")
    ap.add_argument("--wrk-seconds", type=int, default=5)
    ap.add_argument("--only", default="S1,S2,S3,S4,S5,S6,S7,S8,S9")
    ap.add_argument("--s9-services", type=int, default=50)
    ap.add_argument("--s9-tags", type=int, default=200)
    ap.add_argument("--s9-interval", type=int, default=5, help="versions.interval of S9's daemon, seconds")
    ap.add_argument("--s9-scans", type=int, default=4, help="idle scans measured in S9")
    ap.add_argument("--s9-pushes", type=int, default=5, help="new tags pushed while S9's daemon runs")
    ap.add_argument("--s7-peer", type=int, default=100, help="files sops --decrypt decrypts for S7's peer")
    ap.add_argument("--s8-envs", type=int, default=int(os.environ.get("S8_ENVS", "200")),
                    help="environments applied in S8 (default $S8_ENVS, else 200; the issue's figure is 1,000)")
    ap.add_argument("--s8-runs", type=int, default=None,
                    help="S8 rounds (each starts a fresh API server per peer); default --runs")
    ap.add_argument("--s8-concurrency", type=int, default=8,
                    help="requests in flight: converge's target concurrency and the floor client's threads")
    ap.add_argument("--s8-idle", type=int, default=10, help="seconds of the S8 idle-pass window per round")
    ap.add_argument("--no-s8-diagnose", dest="s8_diagnose", action="store_false",
                    help="skip S8's one extra converge cold apply at 4× the concurrency")
    ap.add_argument("--s8-saves", type=int, default=2,
                    help="one-claim saves into the S8 daemon's watched directory per round")
    ap.add_argument("--s10-envs", type=int, default=int(os.environ.get("S10_ENVS", "3000")),
                    help="S10's environments shared by 3 shards (default $S10_ENVS, else 3,000)")
    ap.add_argument("--s10-failover-envs", type=int, default=50, help="S10 failover's environments")
    ap.add_argument("--s10-rounds", type=int, default=5, help="S10 failover's kill -9 rounds")
    ap.add_argument("--s10-settle", type=int, default=5, help="seconds between S10 failover rounds")
    ap.add_argument("--s10-timeout", type=int, default=1800, help="seconds S10's cold apply may take")
    ap.add_argument("--s12-prs", type=int, default=100, help="S12's open pull requests on the real Gitea")
    ap.add_argument("--s12-interval", type=int, default=5, help="S12's git source interval (its PR polls), seconds")
    ap.add_argument("--s12-idle-polls", type=int, default=4, help="idle PR polls measured in S12")
    ap.add_argument("--s12-pushes", type=int, default=3, help="pushes to one PR timed in S12 (push -> comment)")
    ap.add_argument("--no-apply", dest="apply", action="store_false", help="skip run --once in S1")
    ap.add_argument("--apply-runs", type=int, default=2,
                    help="runs of the S1 apply (each writes ~340k files: 20-60 s here)")
    ap.add_argument("--results", default=os.path.join(HERE, "RESULTS.md"))
    ap.add_argument("--keep", action="store_true", help="keep the run directory")
    ap.add_argument("--merge", action="store_true",
                    help="replace only the rows of the scenarios run now in the saved RESULTS.json/RESULTS.md")
    ap.add_argument("--render-only", action="store_true",
                    help="rewrite RESULTS.md from RESULTS.json and ANALYSIS.md, measuring nothing")
    if "--render-only" in sys.argv[1:]:
        results = os.path.join(HERE, "RESULTS.md")
        with open(os.path.splitext(results)[0] + ".json") as f:
            render(json.load(f), results)
        return
    args = ap.parse_args()
    if args.s8_runs is None:
        args.s8_runs = args.runs
    only = set(args.only.upper().split(","))
    started = datetime.datetime.now(datetime.timezone.utc)
    t0 = time.time()
    load_before = loadavg()
    b = Bench(args)
    log(f"run directory {b.run}; load average {' '.join(load_before)}")
    try:
        if "S1" in only:
            b.s1()
        if only & {"S2", "S3", "S4"}:
            run, repo, pusher = b.s2_s3()
            if "S3" in only:
                b.s3_bucket()
            if "S4" in only:
                b.s4_polling(run, repo, pusher)
        if only & {"S4", "S5", "S6"}:
            b.s4_s5_s6()
        if "S7" in only:
            b.s7()
        if "S8" in only:
            b.s8()
        if "S9" in only:
            b.s9()
        if "S10" in only:
            b.s10()
        if "S12" in only:
            b.s12()
    finally:
        if b.git:
            b.git.stop()
    load_after = loadavg()
    b.report(started, load_before, load_after, time.time() - t0)


if __name__ == "__main__":
    main()
