"""A converge daemon (`converge run`) under test, its API and metrics."""

import re
import subprocess
import time

from harness import CLK_TCK, http_get, parse_metrics, spawn, stop, tail


class Daemon:
    """`converge run` on a free loopback port, JSON logs to a file."""

    def __init__(self, binary, config, logfile):
        self.logfile = logfile
        self.log = open(logfile, "wb")
        self.started = time.perf_counter()
        self.p = spawn([binary, "--log-format", "json", "run", "--config", config,
                        "--listen", "127.0.0.1:0"], stdout=subprocess.DEVNULL, stderr=self.log)
        self.url = None
        deadline = time.time() + 60
        while time.time() < deadline and self.url is None:
            if self.p.poll() is not None:
                raise RuntimeError(f"converge run exited {self.p.returncode}: {tail(logfile)}")
            with open(logfile, "rb") as f:
                m = re.search(rb"api listening on (https?://[0-9.:]+)", f.read())
            if m:
                self.url = m.group(1).decode()
            else:
                time.sleep(0.02)
        if self.url is None:
            raise RuntimeError(f"converge run did not listen: {tail(logfile)}")

    def wait_ready(self, timeout=600):
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.p.poll() is not None:
                raise RuntimeError(f"converge run exited {self.p.returncode}: {tail(self.logfile)}")
            try:
                if http_get(self.url + "/ready", timeout=2)[0] == 200:
                    return time.perf_counter() - self.started
            except Exception:  # noqa: BLE001 (503 until ready)
                pass
            time.sleep(0.05)
        raise RuntimeError("converge run not ready in time")

    def metrics(self):
        return parse_metrics(http_get(self.url + "/metrics")[1].decode())

    def cpu_seconds(self):
        with open(f"/proc/{self.p.pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime, stime

    def status(self, key):
        with open(f"/proc/{self.p.pid}/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])  # kB
        return None

    def stop(self):
        stop(self.p)
        self.log.close()
