"""S10: shards and failover (HA) on one cluster."""

import json
import os
import shutil
import signal
import statistics
import time

from harness import fresh_dir, http_get, log, metric, stop, summary, tail, timed
from servers.daemon import Daemon
from servers.kube import KubeCluster, kube_config, kube_tools_bin


class S10:
    # -- S10 --------------------------------------------------------------
    def s10(self):
        """HA and shards against a real API server: leader failover after kill -9 (5 rounds,
        default lease timings), 3 shards sharing the environments (share, takeover, join),
        and the same cold apply by one replica."""
        a = self.a
        n = a.s10_envs
        for tool in ("etcd", "kube-apiserver", "kube-controller-manager"):
            if not os.path.isfile(os.path.join(kube_tools_bin(), tool)):
                self.row("S10", "HA and shards", f"not measured: {tool} missing in {kube_tools_bin()}",
                         "", "", "", "n/a")
                return
        run = fresh_dir(os.path.join(self.run, "s10"))
        files = sorted(os.listdir(os.path.join(self.w, "claims-yaml")))[:n]
        if len(files) < n:
            raise RuntimeError(f"S10 needs {n} claims; the workload has {len(files)} (raise --n)")
        claims = os.path.join(run, "claims")
        os.makedirs(claims)
        for f in files:
            shutil.copyfile(os.path.join(self.w, "claims-yaml", f), os.path.join(claims, f))
        small = os.path.join(run, "claims-failover")
        os.makedirs(small)
        for f in files[:a.s10_failover_envs]:
            shutil.copyfile(os.path.join(claims, f), os.path.join(small, f))
        out = {"environments": n}
        log(f"S10: leader failover, {a.s10_rounds} rounds of kill -9 ({a.s10_failover_envs} environments)")
        out["failover"] = self.s10_failover(run, small)
        log(f"S10: 3 shards x {n} environments")
        out["shards"] = self.s10_shards(run, claims, n)
        log(f"S10: one replica, cold apply of {n} environments")
        out["single"] = self.s10_single(run, claims, n)
        self.details["S10"] = out
        self.s10_rows(out)

    def s10_cluster(self, run, name):
        cluster = KubeCluster(os.path.join(run, name))
        time.sleep(1)  # let the controller manager's start-up requests pass
        return cluster

    def s10_done(self, cluster):
        cluster.stop()
        if not self.a.keep:
            shutil.rmtree(cluster.dir, ignore_errors=True)

    def s10_failover(self, run, claims):
        a = self.a
        cluster = self.s10_cluster(run, "kube-failover")
        replicas = []
        try:
            extra = "  leader_election:\n    lease: bench\n"

            def start(i):
                d = fresh_dir(os.path.join(run, f"failover-{i}-{len(replicas)}"))
                cfg = kube_config(os.path.join(d, "c.yaml"), claims, d, cluster.kubeconfig, self.tags,
                                  a.s8_concurrency)
                with open(cfg) as f:
                    text = f.read()
                with open(cfg, "w") as f:
                    f.write(text.replace("  concurrency:", extra + "  concurrency:", 1))
                r = Daemon(self.bin, cfg, os.path.join(d, "daemon.log"))
                replicas.append(r)
                return r

            def ready(r):
                try:
                    return http_get(r.url + "/ready", timeout=2)[0] == 200
                except Exception:  # noqa: BLE001 (503 while standing by)
                    return False

            leader = start(0)
            leader.wait_ready()
            standby = start(1)
            time.sleep(3)
            if ready(standby):
                raise RuntimeError("S10: the standby is ready while the leader leads")
            times, applied_again = [], 0
            for i in range(a.s10_rounds):
                time.sleep(a.s10_settle)  # a few renewals, so the kill falls anywhere in a period
                stop(leader.p, signal.SIGKILL)
                leader.log.close()
                t0 = time.perf_counter()
                deadline = time.time() + 120
                while not ready(standby):
                    if time.time() > deadline:
                        raise RuntimeError(f"S10: no takeover: {tail(standby.logfile)}")
                    time.sleep(0.05)
                took = time.perf_counter() - t0
                m = standby.metrics()
                applied_again += int(metric(m, "converge_plan_changes_total"))
                times.append(took)
                log(f"S10 failover round {i + 1}/{a.s10_rounds}: standby ready {took:.2f} s after kill -9")
                leader, standby = standby, start(i + 2)
                time.sleep(2)
            return {"seconds": summary(times), "p50_s": statistics.median(times),
                    "changes_by_new_leaders": applied_again,
                    "lease": {"duration_s": 15, "renew_deadline_s": 10, "retry_period_s": 2}}
        finally:
            for r in replicas:
                if r.p.poll() is None:
                    r.stop()
            self.s10_done(cluster)

    def s10_shards(self, run, claims, n):
        a = self.a
        cluster = self.s10_cluster(run, "kube-shards")
        members = {}
        try:
            def start(name):
                d = fresh_dir(os.path.join(run, f"shard-{name}"))
                extra = f"  shards:\n    identity: {name}\n"
                cfg = kube_config(os.path.join(d, "c.yaml"), claims, d, cluster.kubeconfig, self.tags,
                                  a.s8_concurrency)
                with open(cfg) as f:
                    text = f.read()
                with open(cfg, "w") as f:
                    f.write(text.replace("  concurrency:", extra + "  concurrency:", 1))
                members[name] = Daemon(self.bin, cfg, os.path.join(d, "daemon.log"))
                return members[name]

            def share(r):
                body = json.loads(http_get(r.url + "/api/v1/environments", timeout=60)[1])
                return {i["name"] for i in body["items"]}, body.get("shard", {}).get("members", [])

            def settled(names, size):
                """Each of `names` is ready, sees `size` members, and the shares split all n
                (the gauges first, cheap; then the lists)."""
                total = 0
                for x in names:
                    r = members[x]
                    try:
                        if http_get(r.url + "/ready", timeout=2)[0] != 200:
                            return None
                        m = r.metrics()
                    except Exception:  # noqa: BLE001
                        return None
                    if m.get("converge_shard_members") != size:
                        return None
                    total += int(m.get("converge_shard_environments", 0))
                if total != n:
                    return None
                shares = {}
                for x in names:
                    got, live = share(members[x])
                    if len(live) != size:
                        return None
                    shares[x] = got
                union = set().union(*shares.values())
                if len(union) != n or sum(len(v) for v in shares.values()) != n:
                    return None
                return shares

            def wait(names, size, timeout):
                t0 = time.perf_counter()
                deadline = time.time() + timeout
                while True:
                    shares = settled(names, size)
                    if shares is not None:
                        return shares, time.perf_counter() - t0
                    if time.time() > deadline:
                        raise RuntimeError(f"S10: shards did not settle: {[tail(members[x].logfile, 600) for x in names]}")
                    time.sleep(0.5)

            def changes(names):
                return {x: {k: int(metric(members[x].metrics(), "converge_plan_changes_total", action=k))
                            for k in ("create", "update", "delete")} for x in names}

            t0 = time.perf_counter()
            for x in ("a", "b", "c"):
                start(x)
            shares, _ = wait(["a", "b", "c"], 3, a.s10_timeout)
            cold = time.perf_counter() - t0
            c0 = changes(["a", "b", "c"])
            created = sum(v["create"] for v in c0.values())
            sizes = {x: len(v) for x, v in shares.items()}
            even = n / 3
            spread = max(abs(v - even) for v in sizes.values()) / even
            log(f"S10 shards: cold apply by 3 shards {cold:.1f} s (15 s of it the members' warm-up); shares "
                f"{sizes} ({spread * 100:.1f} % off even); creates {created} of {n}")
            # b is killed: its share moves to a and c.
            stop(members["b"].p, signal.SIGKILL)
            members["b"].log.close()
            after_kill, took = wait(["a", "c"], 2, 180)
            c1 = changes(["a", "c"])
            again = sum(c1[x][k] - c0[x][k] for x in ("a", "c") for k in ("create", "update", "delete"))
            log(f"S10 shards: b's {sizes['b']} environments taken over {took:.1f} s after kill -9; "
                f"{again} changes applied again")
            # d joins.
            start("d")
            joined, took_join = wait(["a", "c", "d"], 3, 180)
            moved = len(joined["d"]) / n
            stayed = all(joined[x] <= after_kill[x] for x in ("a", "c"))
            c2 = changes(["a", "c", "d"])
            again_join = sum(c2[x][k] - c1.get(x, {}).get(k, 0) for x in ("a", "c", "d")
                             for k in ("create", "update", "delete"))
            log(f"S10 shards: d joined after {took_join:.1f} s, took {len(joined['d'])} ({moved * 100:.1f} %); "
                f"only moved to d: {stayed}; {again_join} changes applied")
            return {"cold_s": cold, "shares": sizes, "spread": spread, "created": created,
                    "takeover_s": took, "lost_share": sizes["b"] / n, "applied_again_on_takeover": again,
                    "join_s": took_join, "moved_on_join": moved, "only_to_the_new_member": stayed,
                    "applied_on_join": again_join,
                    "rss_kib": {x: members[x].status("VmHWM") for x in ("a", "c", "d")}}
        finally:
            for r in members.values():
                if r.p.poll() is None:
                    r.stop()
            self.s10_done(cluster)

    def s10_single(self, run, claims, n):
        cluster = self.s10_cluster(run, "kube-single")
        try:
            d = fresh_dir(os.path.join(run, "single"))
            cfg = kube_config(os.path.join(d, "c.yaml"), claims, d, cluster.kubeconfig, self.tags,
                              self.a.s8_concurrency)
            k0 = cluster.cpu_seconds()
            cold = timed([self.bin, "run", "--once", "--config", cfg])
            k1 = cluster.cpu_seconds()
            log(f"S10 one replica: cold apply of {n} environments {cold['wall']:.1f} s "
                f"(converge CPU {cold.get('user', 0) + cold.get('sys', 0):.1f} s, API server + etcd {k1 - k0:.1f} s)")
            return {"cold": cold, "server_cpu_s": k1 - k0}
        finally:
            self.s10_done(cluster)

    def s10_rows(self, out):
        n = out["environments"]
        f = out["failover"]
        secs = f["seconds"]
        self.row("S10", f"leader kill -9 -> standby ready (applying), default lease 15 s / renew 10 s / retry 2 s, "
                 f"p50 of {secs['n']} (min / p50 / max)",
                 f"{secs['min']:.1f} / {f['p50_s']:.1f} / {secs['max']:.1f} s", "", "", "<= 15 s (p50 of 5)",
                 "met" if f["p50_s"] <= 15 else "not met")
        self.row("S10", "failover: changes the new leaders applied on taking over (nothing twice)",
                 str(f["changes_by_new_leaders"]), "", "", "0", "met" if f["changes_by_new_leaders"] == 0 else "not met")
        sh = out["shards"]
        sizes = ", ".join(f"{k} {v}" for k, v in sorted(sh["shares"].items()))
        self.row("S10", f"3 shards x {n} environments: each replica's share (created once each: {sh['created']})",
                 f"{sizes}; {sh['spread'] * 100:.1f} % off even", "", "", "within 10 % of even",
                 "met" if sh["spread"] <= 0.10 and sh["created"] == n else "not met")
        self.row("S10", "a shard killed (kill -9): its share taken over by the others after; applied again",
                 f"{sh['lost_share'] * 100:.1f} % moved in {sh['takeover_s']:.1f} s; "
                 f"{sh['applied_again_on_takeover']} applied again", "", "", "<= 1.2 x 1/N moved",
                 "met" if sh["lost_share"] <= 1.2 / 3 and sh["applied_again_on_takeover"] == 0 else "not met")
        self.row("S10", "a shard joining (2 -> 3): share moved to it, only to it",
                 f"{sh['moved_on_join'] * 100:.1f} % in {sh['join_s']:.1f} s; only to the new member: "
                 f"{sh['only_to_the_new_member']}; {sh['applied_on_join']} applied", "", "",
                 "<= 1.2 x 1/N (40 %)",
                 "met" if sh["moved_on_join"] <= 1.2 / 3 and sh["only_to_the_new_member"] else "not met")
        single = out["single"]["cold"]["wall"]
        self.row("S10", f"cold apply of {n} environments: 3 shards (from start, 15 s warm-up included) vs one replica",
                 f"{sh['cold_s']:.1f} s", f"one replica (run --once): {single:.1f} s",
                 f"{single / sh['cold_s']:.2f}x", "report", "reported")
        self.notes.append(
            "S10: on a fresh etcd + kube-apiserver + kube-controller-manager per part (S8's recipe), with "
            "S8's converge config (concurrency 8, admin kubeconfig) plus `leader_election` or `shards` at their "
            "default timings (lease 15 s, renew deadline 10 s, retry 2 s). Failover: two `converge run` "
            f"replicas over the first {self.a.s10_failover_envs} claims; the leader is killed with SIGKILL "
            f"{self.a.s10_settle} s after the last takeover, the time runs to the standby's /ready answering 200 "
            "(it leads, read the inventory and finished a pass); the killed one is started again as the next "
            "standby; `converge_plan_changes_total` of each new leader counts what it applied on taking over. "
            "Shards: members a, b, c started together; cold = start to every member ready with 3 members and the "
            "shares (each member's /api/v1/environments) splitting every environment once (so it includes the "
            "15 s a joining member waits); b is killed with SIGKILL and the time runs to a and c covering all; "
            "then d joins. One replica: `run --once` without sharding on a fresh cluster. The claims are S8's "
            "workload claims (about 33 objects per environment); this cluster has no kubelet, so "
            "Deployments never roll out.")
