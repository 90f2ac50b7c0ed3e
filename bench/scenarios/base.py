"""What every scenario uses: the run directory, the workload, result rows, the
shared git daemon and dir-source daemons."""

import atexit
import os
import shutil
import subprocess
import tempfile
import time

from harness import ROOT, fresh_dir, log, workload, write_config
from servers.daemon import Daemon
from servers.git_daemon import GitDaemon


class Base:
    def __init__(self, args):
        self.a = args
        self.bin = args.bin
        self.rows = []       # (scenario, metric, ours, peer, ratio, target, verdict)
        self.details = {}    # scenario -> dict of raw figures
        self.notes = []
        self.run = tempfile.mkdtemp(prefix="converge-bench-")
        os.chmod(self.run, 0o755)
        atexit.register(lambda: shutil.rmtree(self.run, ignore_errors=True) if not args.keep else None)
        self.w = workload(args.work, args.n, args.seed)
        self.tags = os.path.join(self.w, "tags.yaml")
        self.git = None
        # The commit the binary was built from (bench/run builds just before).
        head = subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
        dirty = subprocess.run(["git", "-C", ROOT, "status", "--porcelain", "--", "src", "Cargo.toml", "Cargo.lock"],
                               capture_output=True, text=True).stdout.strip()
        self.commit = head.stdout.strip() + (", src/ modified" if dirty else "")

    # -- helpers
    def row(self, scenario, metric, ours, peer="", ratio="", target="", verdict=""):
        self.rows.append((scenario, metric, ours, peer, ratio, target, verdict))
        log(f"{scenario} {metric}: {ours} | {peer} | {ratio} | {target} {verdict}")

    def git_daemon(self):
        if self.git is None:
            srv = fresh_dir(os.path.join(self.run, "srv"))
            shutil.copytree(os.path.join(self.w, "repo.git"), os.path.join(srv, "ro.git"))
            self.git = GitDaemon(srv)
        return self.git

    def rw_repo(self, name):
        """A fresh writable copy of the workload repository, served as name.git."""
        self.git_daemon()
        dest = os.path.join(self.run, "srv", f"{name}.git")
        if os.path.exists(dest):
            shutil.rmtree(dest)
        shutil.copytree(os.path.join(self.w, "repo.git"), dest)
        return dest

    def git_source(self, repo, interval):
        return {"name": "envs", "kind": "git", "url": self.git.url(repo), "branch": "main",
                "paths": ["environments/**/*.yaml"], "interval": interval, "timeout": "60s"}

    def dir_daemon(self, name, claims_src, count=None):
        run = fresh_dir(os.path.join(self.run, name))
        src = os.path.join(run, "claims")
        os.makedirs(src)
        files = sorted(os.listdir(claims_src))
        if count is not None:
            files = files[:count]
        for f in files:
            shutil.copyfile(os.path.join(claims_src, f), os.path.join(src, f))
        cfg = write_config(os.path.join(run, "c.yaml"), [{"name": "local", "kind": "dir", "path": src}], run,
                           self.tags, extra="reconcile:\n  dir_interval: 30s\n")
        d = Daemon(self.bin, cfg, os.path.join(run, "daemon.log"))
        return run, src, d

    def settle(self, d, src, changes=10):
        """RSS 3 s after the first pass, then after `changes` one-claim passes
        (a comment appended to a claim, one at a time) and 3 s of rest."""
        time.sleep(3)
        first = d.status("VmRSS")
        names = sorted(os.listdir(src))
        for k in range(changes):
            passes = d.metrics()["converge_passes_total"]
            with open(os.path.join(src, names[k * 7 % len(names)]), "a") as f:
                f.write("# settled\n")
            deadline = time.time() + 60
            while d.metrics()["converge_passes_total"] <= passes and time.time() < deadline:
                time.sleep(0.05)
        time.sleep(3)
        return {"rss_first_pass": first, "rss": d.status("VmRSS"), "hwm": d.status("VmHWM")}
