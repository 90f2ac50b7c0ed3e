"""S4 (triggered), S5 (API under load, against nginx) and S6 (memory), on
dir-source daemons."""

import os
import shutil
import statistics
import subprocess
import threading
import time

from harness import http_get, log, mutable_claims, mutate, pct, summary, wait_for_text, write_config, wrk
from servers.nginx import Nginx


class S5S6:
    def s4_s5_s6(self):
        a = self.a
        # S6 at 1k: small fresh daemons; at 10k: the fresh daemon that then serves S4 and S5
        # (a 10k cold start applies ~340k files, so it is started once).
        small = []
        for r in range(a.rss_runs):
            run, src1k, d = self.dir_daemon(f"s6-1k-{r}", os.path.join(self.w, "claims-yaml"), 1000)
            try:
                ready = d.wait_ready()
                small.append(dict(self.settle(d, src1k), ready_s=ready))
                log(f"S6 1000 environments: steady RSS {small[-1]['rss'] / 1024:.1f} MiB (3 s after the first "
                    f"pass {small[-1]['rss_first_pass'] / 1024:.1f}, peak {small[-1]['hwm'] / 1024:.1f})")
            finally:
                d.stop()
            shutil.rmtree(run, ignore_errors=True)

        log(f"S4 triggered / S5 / S6: daemon on a dir source of {a.n} claims")
        run, src, d = self.dir_daemon("s45", os.path.join(self.w, "claims-yaml"))
        try:
            ready = d.wait_ready()
            time.sleep(3)
            big = {"rss_first_pass": d.status("VmRSS"), "hwm_first_pass": d.status("VmHWM"), "ready_s": ready}
            log(f"S6 {a.n} environments: RSS {big['rss_first_pass'] / 1024:.1f} MiB 3 s after the first pass "
                f"(peak {big['hwm_first_pass'] / 1024:.1f}), ready in {ready:.1f} s")
            names = mutable_claims(src, a.pushes, a.seed + 5)
            stage = os.path.join(run, "stage")
            os.makedirs(stage)
            lat = []
            for k, name in enumerate(names):
                with open(os.path.join(src, name)) as f:
                    text, service, tag = mutate(f.read(), 200 + k)
                target = os.path.join(run, "out", name.rsplit(".", 1)[0], f"deployment-{service}.yaml")
                tmp = os.path.join(stage, name)
                with open(tmp, "w") as f:
                    f.write(text)
                t0 = time.perf_counter()
                os.replace(tmp, os.path.join(src, name))  # an editor's atomic save
                lat.append(wait_for_text(target, tag, 30) - t0)
                log(f"S4 triggered {k + 1}/{len(names)}: applied after {lat[-1] * 1000:.0f} ms")
                time.sleep(0.5)
            self.details["S4-trigger"] = lat
            p50, p99 = pct(lat, 50), pct(lat, 99)
            self.row("S4", f"file saved → applied, dir source watched ({len(lat)} saves): p50 / p99 (max)",
                     f"{p50 * 1000:.0f} / {p99 * 1000:.0f} ms", "", "", "p99 ≤ 250 ms",
                     "met" if p99 <= 0.25 else "MISSED")
            self.s5(d, run)
            time.sleep(3)
            big["rss"] = d.status("VmRSS")
            self.details["S6"] = {"1k": small, "10k": big}
            r1 = statistics.median([v["rss"] for v in small])
            slope = (big["rss"] - r1) / (a.n - 1000)
            self.row("S6", f"RSS slope per environment (steady RSS after a series of one-claim passes: 1k "
                     f"{r1 / 1024:.0f} MiB (median of {len(small)}), {a.n // 1000}k {big['rss'] / 1024:.0f} MiB)",
                     f"{slope:.1f} KiB", "Flux kustomize-controller: 175 MiB at 1000 (published)", "", "≤ 10 KiB",
                     "met" if slope <= 10 else "MISSED")
            self.row("S6", f"steady RSS at {a.n // 1000}k (after S4 triggered and S5)",
                     f"{big['rss'] / 1024:.0f} MiB", "", "", "≤ 150 MiB", "met" if big["rss"] / 1024 <= 150 else "MISSED")
            self.row("S6", f"RSS 3 s after the first {a.n // 1000}k pass / peak (VmHWM) through it",
                     f"{big['rss_first_pass'] / 1024:.0f} / {big['hwm_first_pass'] / 1024:.0f} MiB", "", "", "", "")
        finally:
            d.stop()

    def s5(self, d, run):
        a = self.a
        name = sorted(os.listdir(os.path.join(run, "claims")))[a.n // 2].rsplit(".", 1)[0]
        path = f"/api/v1/environments/{name}"
        status, body = http_get(d.url + path)
        assert status == 200
        ng = Nginx(a.nginx, os.path.join(run, "nginx"), {path: body})
        try:
            ours, theirs = [], []
            for i in range(a.runs):
                ours.append(wrk(a.wrk, d.url + path, a.wrk_seconds))
                theirs.append(wrk(a.wrk, f"http://127.0.0.1:{ng.port}{path}", a.wrk_seconds))
                log(f"S5 run {i + 1}: converge {ours[-1]['rps']:.0f} req/s p99 {ours[-1]['p99_ms']:.2f} ms, "
                    f"nginx {theirs[-1]['rps']:.0f} req/s p99 {theirs[-1]['p99_ms']:.2f} ms")
            # During S1: a cold 10k plan running in a loop beside the daemon.
            cfg = write_config(os.path.join(run, "plan.yaml"),
                               [{"name": "bench", "kind": "dir", "path": os.path.join(self.w, "claims-json")}],
                               os.path.join(run, "planrun"), self.tags)
            stop_flag = threading.Event()

            def load():
                while not stop_flag.is_set():
                    subprocess.run([self.bin, "plan", "--config", cfg, "--format", "json"],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            loaders = [threading.Thread(target=load, daemon=True)]
            for t in loaders:
                t.start()
            time.sleep(0.5)
            busy, busy_ng = [], []
            for _ in range(max(3, a.runs // 2)):
                busy.append(wrk(a.wrk, d.url + path, a.wrk_seconds))
                busy_ng.append(wrk(a.wrk, f"http://127.0.0.1:{ng.port}{path}", a.wrk_seconds))
            stop_flag.set()
            for t in loaders:
                t.join()
        finally:
            ng.stop()
        self.details["S5"] = {"body_bytes": len(body), "idle": {"converge": ours, "nginx": theirs},
                              "during_S1": {"converge": busy, "nginx": busy_ng}}
        o, t = summary([r["rps"] for r in ours]), summary([r["rps"] for r in theirs])
        ratio = o["median"] / t["median"]
        self.row("S5", f"GET /api/v1/environments/{{name}} ({len(body)} B), wrk -t1 -c32: req/s median (max)",
                 f"{o['median']:.0f} ({o['max']:.0f})", f"nginx, same body: {t['median']:.0f} ({t['max']:.0f})",
                 f"{ratio:.2f}×", "≥ 1.0× nginx", "met" if ratio >= 1.0 else "MISSED")
        op99, tp99 = summary([r["p99_ms"] for r in ours]), summary([r["p99_ms"] for r in theirs])
        self.row("S5", "p99 latency, idle: min / median", f"{op99['min']:.2f} / {op99['median']:.2f} ms",
                 f"nginx {tp99['min']:.2f} / {tp99['median']:.2f} ms", f"{op99['median'] / tp99['median']:.2f}×",
                 "≤ 5 ms", "met" if op99["median"] <= 5 else "MISSED")
        bp99, bn99 = summary([r["p99_ms"] for r in busy]), summary([r["p99_ms"] for r in busy_ng])
        self.row("S5", f"p99 latency during S1 (a cold {a.n // 1000}k plan looping beside it): min / median",
                 f"{bp99['min']:.2f} / {bp99['median']:.2f} ms",
                 f"nginx {bn99['min']:.2f} / {bn99['median']:.2f} ms", f"{bp99['median'] / bn99['median']:.2f}×",
                 "≤ 20 ms", "met" if bp99["median"] <= 20 else "MISSED")
