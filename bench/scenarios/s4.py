"""S4 (polling): a push to its environment applied, against the poll timer."""

import os
import random
import subprocess
import time

from harness import GIT_ENV, fast_import_commit, log, mutable_claims, mutate, pct, wait_for_text, write_config
from servers.daemon import Daemon


class S4:
    # -- S4 polling (git source, 10 s) -------------------------------------
    def s4_polling(self, run, repo, pusher):
        a = self.a
        log(f"S4: push → applied, git source polled every 10 s, {a.pushes} pushes")
        cfg = write_config(os.path.join(run, "c10.yaml"), [self.git_source("envs.git", "10s")], run, self.tags)
        # The same state and target as S2: a warm restart, nothing to re-apply.
        d = Daemon(self.bin, cfg, os.path.join(run, "daemon10.log"))
        try:
            d.wait_ready()
            time.sleep(1)
            paths = {os.path.basename(p): p for p in subprocess.run(
                ["git", "-C", pusher, "ls-tree", "-r", "--name-only", "main"], capture_output=True, text=True,
                check=True, env=GIT_ENV).stdout.split()}
            names = mutable_claims(os.path.join(self.w, "claims-yaml"), a.pushes, a.seed + 4)
            rng = random.Random(a.seed + 4)
            lat = []
            for k, name in enumerate(names):
                time.sleep(rng.uniform(0, 10))  # a random phase against the poll timer
                with open(os.path.join(self.w, "claims-yaml", name)) as f:
                    text, service, tag = mutate(f.read(), 100 + k)
                fast_import_commit(pusher, paths[name], text, f"bench: {name} {service} {tag}")
                env = name.rsplit(".", 1)[0]
                target = os.path.join(run, "out", env, f"deployment-{service}.yaml")
                subprocess.run(["git", "-C", pusher, "push", "-q", repo, "main"], check=True, env=GIT_ENV)
                t0 = time.perf_counter()
                lat.append(wait_for_text(target, tag, 30) - t0)
                log(f"S4 push {k + 1}/{len(names)}: applied after {lat[-1]:.2f} s")
            self.details["S4-poll"] = lat
            p50, p99 = pct(lat, 50), pct(lat, 99)
            self.row("S4", f"push → applied, git polled every 10 s ({len(lat)} pushes): p50 / p99 (max)",
                     f"{p50:.2f} / {p99:.2f} s", "Argo CD default poll 180 s, Flux 60 s (published)",
                     "", "p50 ≤ 5.2 s, p99 ≤ 10.5 s",
                     "met" if p50 <= 5.2 and p99 <= 10.5 else "MISSED")
        finally:
            d.stop()
