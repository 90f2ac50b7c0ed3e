"""`git daemon` on loopback, serving the workload repositories."""

import os
import subprocess

from harness import GIT_ENV, free_port, spawn, stop, wait_port


class GitDaemon:
    def __init__(self, base):
        exec_path = subprocess.run(["git", "--exec-path"], capture_output=True, text=True,
                                   check=True).stdout.strip()
        self.port = free_port()
        # git-daemon itself, not through the `git` wrapper (stopping the
        # wrapper would leave the daemon serving).
        self.p = spawn([os.path.join(exec_path, "git-daemon"), "--listen=127.0.0.1",
                        f"--port={self.port}", "--export-all", "--reuseaddr",
                        f"--base-path={base}", base],
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=GIT_ENV)
        wait_port(self.port)

    def url(self, repo):
        return f"git://127.0.0.1:{self.port}/{repo}"

    def stop(self):
        stop(self.p)
