"""S9: tag polling against a registry, and new tags followed."""

import concurrent.futures
import json
import os
import statistics
import time

from harness import fresh_dir, log, tail
from servers.counting_proxy import CountingProxy
from servers.daemon import Daemon
from servers.registry import Registry, registry_binary


class S9:
    # -- S9 (tag polling against the distribution registry) ---------------
    def s9(self):
        a = self.a
        log(f"S9: tag polling, {a.s9_services} services x {a.s9_tags} tags, {a.s9_interval} s interval")
        binary = registry_binary()
        if binary is None:
            self.row("S9", "tag polling", "not measured: the distribution registry is missing "
                     "(scripts/tools builds it)")
            return
        run = fresh_dir(os.path.join(self.run, "s9"))
        reg = Registry(binary, run)
        proxy = d = None
        try:
            services = [f"svc{i:02d}" for i in range(a.s9_services)]
            tags = [f"1.{i // 20}.{i % 20}" for i in range(a.s9_tags)]
            t0 = time.perf_counter()

            def push_service(svc):
                for i, t in enumerate(tags):
                    reg.push(f"releases/{svc}", t, blob=i == 0)

            with concurrent.futures.ThreadPoolExecutor(4) as pool:
                list(pool.map(push_service, services))
            log(f"S9: pushed {len(services) * len(tags)} tags in {time.perf_counter() - t0:.1f} s")
            proxy = CountingProxy(reg.port)
            claims = fresh_dir(os.path.join(run, "claims"))
            n_envs = 2 * len(services)
            uses = {svc: [] for svc in services}
            for k in range(n_envs):
                used = [services[k % len(services)], services[(k + 1) % len(services)]]
                for svc in used:
                    uses[svc].append(f"env{k:03d}")
                body = "".join(f"  {s}: \"^1.0.0\"\n" for s in used)
                with open(os.path.join(claims, f"env{k:03d}.yaml"), "w") as f:
                    f.write("user: john.doe@company.com\nenvironment_pool: team1\n"
                            "creation_date: \"2024-01-15T10:30:00Z\"\n"
                            f"environment_name: env{k:03d}\nenvironment_type: dev\n"
                            f"deployment_method: dynamic\nservices:\n{body}")
            out = os.path.join(run, "out")
            cfg = os.path.join(run, "c9.yaml")
            with open(cfg, "w") as f:
                f.write(f"""sources:
  - name: local
    kind: dir
    path: {json.dumps(claims)}
target:
  kind: manifests
  path: {json.dumps(out)}
state_dir: {json.dumps(os.path.join(run, 'state'))}
images:
  registry: 127.0.0.1:{proxy.port}/releases
versions:
  from: registry
  plain_http: true
  interval: {a.s9_interval}s
  budget: 10000
""")
            d = Daemon(self.bin, cfg, os.path.join(run, "daemon.log"))
            d.wait_ready()

            def applied(env, svc, tag):
                folder = os.path.join(out, env)
                try:
                    names = os.listdir(folder)
                except OSError:
                    return False
                want = f"/{svc}:{tag}"
                for name in names:
                    if name.startswith("deployment-"):
                        with open(os.path.join(folder, name)) as fh:
                            if want in fh.read():
                                return True
                return False

            deadline = time.time() + 300
            while not all(applied(f"env{k:03d}", services[k % len(services)], tags[-1]) for k in range(n_envs)):
                if time.time() > deadline:
                    raise RuntimeError("S9: environments not applied in time: " + tail(d.logfile))
                time.sleep(0.1)
            # Idle scans: the unchanged lists.
            m0, cpu0, (up0, down0) = d.metrics(), d.cpu_seconds(), proxy.counts()
            scans0 = m0.get("converge_tag_scans_total", 0.0)
            deadline = time.time() + a.s9_interval * (a.s9_scans + 3) + 60
            while d.metrics().get("converge_tag_scans_total", 0.0) < scans0 + a.s9_scans:
                if time.time() > deadline:
                    raise RuntimeError("S9: the daemon did not scan")
                time.sleep(0.05)
            m1, cpu1, (up1, down1) = d.metrics(), d.cpu_seconds(), proxy.counts()
            scans = m1.get("converge_tag_scans_total", 0.0) - scans0

            def delta(name):
                # parse_metrics also keeps each family's sum under its bare name.
                return m1.get(name, 0.0) - m0.get(name, 0.0)

            requests = delta("converge_registry_requests_total")
            idle = {"scans": scans, "requests": requests, "bytes_up": up1 - up0, "bytes_down": down1 - down0,
                    "cpu_s": cpu1 - cpu0, "resolved": delta("converge_claims_resolved_total"),
                    "rendered": delta("converge_claims_rendered_total"),
                    "passes": delta("converge_passes_total")}
            log(f"S9 idle: {idle}")
            # New tags: pushed while the daemon runs.
            pushes = []
            for k in range(a.s9_pushes):
                svc, tag = services[k], f"1.9.{20 + k}"
                m0 = d.metrics()
                reg.push(f"releases/{svc}", tag, blob=False)
                t_push = time.perf_counter()
                deadline = time.time() + a.s9_interval * 3 + 30
                envs = uses[svc]
                while not all(applied(e, svc, tag) for e in envs):
                    if time.time() > deadline:
                        raise RuntimeError("S9: the new tag was not applied in time: " + tail(d.logfile))
                    time.sleep(0.005)
                latency = time.perf_counter() - t_push
                time.sleep(0.5)
                m1 = d.metrics()
                pushes.append({"latency_s": latency, "affected": len(envs),
                               "resolved": delta("converge_claims_resolved_total"),
                               "rendered": delta("converge_claims_rendered_total")})
                log(f"S9 push {k + 1}/{a.s9_pushes}: {svc}:{tag} applied after {latency * 1000:.0f} ms, "
                    f"resolved {pushes[-1]['resolved']:.0f}, rendered {pushes[-1]['rendered']:.0f}")
        finally:
            if d:
                d.stop()
            if proxy:
                proxy.stop()
            reg.stop()
        self.details["S9"] = {"services": len(services), "tags": len(tags), "environments": n_envs,
                              "interval_s": a.s9_interval, "idle": idle, "pushes": pushes}
        per = max(idle["scans"], 1)
        self.row("S9", f"idle scan, {len(services)} services × {len(tags)} tags (page size 1000): registry requests; "
                 "bytes sent / received per scan",
                 f"{idle['requests'] / per:.0f} requests; {idle['bytes_up'] / per / 1024:.1f} / "
                 f"{idle['bytes_down'] / per / 1024:.1f} KiB", "", "", "", "")
        self.row("S9", f"idle scan: daemon CPU per scan ({idle['scans']:.0f} scans); claims resolved / rendered "
                 "and passes over them",
                 f"{idle['cpu_s'] / per * 1000:.0f} ms; {idle['resolved']:.0f} / {idle['rendered']:.0f}; "
                 f"{idle['passes']:.0f} passes", "", "", "0 / 0, no pass",
                 "met" if idle["resolved"] == 0 and idle["rendered"] == 0 and idle["passes"] == 0 else "missed")
        lat = [p["latency_s"] for p in pushes]
        if lat:
            bound = a.s9_interval + 0.25
            self.row("S9", f"new tag pushed → every environment using it applied ({len(lat)} pushes, "
                     f"{a.s9_interval} s interval): max / median",
                     f"{max(lat) * 1000:.0f} / {statistics.median(lat) * 1000:.0f} ms", "", "",
                     f"≤ interval + 250 ms ({bound * 1000:.0f} ms)", "met" if max(lat) <= bound else "missed")
            only = all(p["resolved"] == p["affected"] and p["rendered"] == p["affected"] for p in pushes)
            affected = pushes[0]["affected"]
            self.row("S9", f"new tag: claims resolved / rendered per push ({affected} of {n_envs} environments "
                     "use each service)",
                     ", ".join(f"{p['resolved']:.0f}/{p['rendered']:.0f}" for p in pushes), "", "",
                     f"only the affected ({affected}/{affected})", "met" if only else "missed")
