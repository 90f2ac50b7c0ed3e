"""S3 (bucket): idle polls of an s3 source on Garage."""

import math
import os
import shutil
import time

from harness import fresh_dir, log, metric, write_config
from servers.daemon import Daemon
from servers.garage import GARAGE_REGION, Garage, garage_binary


class S3Bucket:
    # -- S3 (bucket): idle polls of an unchanged s3 source -----------------
    def s3_bucket(self):
        a = self.a
        keys = sorted(os.listdir(os.path.join(self.w, "claims-json")))
        pages = max(1, math.ceil(len(keys) / 1000))
        target = f"⌈keys/1000⌉ = {pages} LIST, 0 GET"
        what = f"idle s3 poll, {len(keys)} objects in Garage"
        binary = garage_binary(a.garage)
        if binary is None:
            self.row("S3", f"{what}: LIST / GET calls per poll",
                     "not measured: garage not installed (run bench/run or scripts/test once)", "", "", target, "n/a")
            return
        log(f"S3 (bucket): {len(keys)} claims as objects in Garage, daemon on an s3 source, 1 s polls")
        run = fresh_dir(os.path.join(self.run, "s3b"))
        g = Garage(binary, os.path.join(run, "garage"))
        d = None
        try:
            src = os.path.join(self.w, "claims-json")
            upload_s = g.put_all({k: os.path.join(src, k) for k in keys})
            log(f"S3 (bucket): uploaded {len(keys)} objects in {upload_s:.1f} s")
            name = "bucket"
            cfg = write_config(os.path.join(run, "c.yaml"), [{
                "name": name, "kind": "s3", "endpoint": g.endpoint(), "region": GARAGE_REGION, "bucket": g.bucket,
                "path_style": True, "interval": "1s", "timeout": "30s",
                "credentials": {"access_key_id_file": g.key_id_file, "secret_access_key_file": g.secret_file}}],
                run, self.tags)
            d = Daemon(self.bin, cfg, os.path.join(run, "daemon.log"))
            ready = d.wait_ready()
            first = d.metrics()
            # Requests up to /ready (the first pass; a second poll may have begun by then).
            first_pass = {"ready_s": ready, "list": metric(first, "converge_s3_requests_total", source=name, op="list"),
                          "get": metric(first, "converge_s3_requests_total", source=name, op="get")}
            log(f"S3 (bucket): daemon ready after {ready:.1f} s ({first_pass['list']:.0f} LIST, "
                f"{first_pass['get']:.0f} GET by then)")
            time.sleep(1.5)
            polls_key = f'converge_source_polls_total{{source="{name}"}}'

            def after_poll(m):
                """The first scrape after the next poll completed (the counter is bumped when the read
                returns and the next poll is ~1 s away, so no request of a later poll is in it)."""
                deadline = time.time() + 30
                while time.time() < deadline:
                    time.sleep(0.02)
                    n = d.metrics()
                    if n[polls_key] > m[polls_key]:
                        return n
                raise RuntimeError("the s3 source did not poll within 30 s")

            # The window starts just after a poll; the daemon's CPU over it is read at its
            # two ends with no scrape in between (as for git). The request counters are
            # read at the end of the first poll after the window, so every poll counted
            # is whole.
            m0 = after_poll(d.metrics())
            c0, t0 = d.cpu_seconds(), time.perf_counter()
            time.sleep(a.idle)
            c1, t1 = d.cpu_seconds(), time.perf_counter()
            m1 = d.metrics()
            m2 = after_poll(m1)
            cpu_polls = int(m1[polls_key] - m0[polls_key])
            polls = int(m2[polls_key] - m0[polls_key])

            def delta(name_, **labels):
                return metric(m2, name_, **labels) - metric(m0, name_, **labels)
            lists = delta("converge_s3_requests_total", source=name, op="list")
            gets = delta("converge_s3_requests_total", source=name, op="get")
            errors = delta("converge_source_errors_total", source=name)
            passes = delta("converge_passes_total")
            parsed = delta("converge_claims_parsed_total")
            cpu = max(0.0, c1 - c0)
            per_poll = cpu * 1000 / max(cpu_polls, 1)
            self.details["S3-bucket"] = {
                "objects": len(keys), "upload_s": upload_s, "first_pass": first_pass, "seconds": t1 - t0,
                "polls": polls, "cpu_polls": cpu_polls, "list": lists, "get": gets, "errors": errors,
                "passes": passes, "parsed": parsed, "cpu_s": cpu, "cpu_ms_per_poll": per_poll,
                "rss_kib": d.status("VmRSS"), "garage": g.cli("--version", check=False).stdout.strip()}
            lp, gp = lists / max(polls, 1), gets / max(polls, 1)
            ok = polls > 0 and lists == polls * pages and gets == 0 and errors == 0 and parsed == 0
            self.row("S3", f"{what}: LIST / GET calls per poll (`converge_s3_requests_total`, {polls} polls, "
                     f"{passes:.0f} passes, {errors:.0f} errors, {parsed:.0f} claims parsed)",
                     f"{lp:.2f} / {gp:.2f}", "", "", target, "met" if ok else "MISSED")
            self.row("S3", f"{what}: daemon CPU per poll ({cpu_polls} polls in {t1 - t0:.0f} s; 10 ms ticks)",
                     f"{per_poll:.1f} ms", "", "", "", "")
        finally:
            if d is not None:
                d.stop()
            g.stop()
            if not a.keep:
                shutil.rmtree(run, ignore_errors=True)  # the first pass's manifests (~34 files per claim)
