"""S1: a cold full reconcile (plan, apply) of the workload against its peers."""

import json
import os
import shutil
import subprocess

from harness import ROOT, fresh_dir, log, summary, sync, timed, write_config


class S1:
    # -- S1 ---------------------------------------------------------------
    def s1(self):
        a = self.a
        log("S1: cold full reconcile of 10k claims")
        run = os.path.join(self.run, "s1")
        os.makedirs(run)
        cfg = {}
        for fmt in ("json", "yaml"):
            cfg[fmt] = write_config(os.path.join(run, f"{fmt}.yaml"),
                                    [{"name": "bench", "kind": "dir", "path": os.path.join(self.w, f"claims-{fmt}")}],
                                    run, self.tags)
        self.git_daemon()
        cfg["git"] = write_config(os.path.join(run, "git.yaml"), [self.git_source("ro.git", "1h")], run, self.tags)
        # Applies write into their own target, so every plan above starts from an empty one.
        arun = os.path.join(run, "apply")
        for fmt in ("json", "yaml"):
            cfg["apply-" + fmt] = write_config(os.path.join(run, f"apply-{fmt}.yaml"), [{
                "name": "bench", "kind": "dir", "path": os.path.join(self.w, f"claims-{fmt}")}], arun, self.tags)

        # Correctness first: the plan creates every environment, no diagnostics.
        p = subprocess.run([self.bin, "plan", "--config", cfg["json"], "--format", "json"],
                           capture_output=True, text=True)
        if p.returncode != 1:
            raise RuntimeError(f"converge plan exited {p.returncode}: {p.stderr[-2000:]}")
        self.check_plan(p.stdout, p.stderr)
        schema = os.path.join(ROOT, "schemas", "claim.v1.json")
        ajv = [a.ajv, "validate", "--spec=draft2020", "--strict=false", "-c", "ajv-formats", "-s", schema]
        cedar = [a.cedar, "run-tests", "--policies", os.path.join(ROOT, "policies", "default.cedar"),
                 "--tests", os.path.join(self.w, "cedar", "tests.json")]
        cases = {
            "plan-json": lambda: timed([self.bin, "plan", "--config", cfg["json"]], ok=(1,)),
            "plan-yaml": lambda: timed([self.bin, "plan", "--config", cfg["yaml"]], ok=(1,)),
            "plan-git": lambda: (fresh_dir(os.path.join(run, "state")),
                                 timed([self.bin, "plan", "--config", cfg["git"]], ok=(1,)))[1],
            "apply-json": lambda: (fresh_dir(os.path.join(arun, "out")), fresh_dir(os.path.join(arun, "state")),
                                   sync(), timed([self.bin, "run", "--once", "--config", cfg["apply-json"]]))[3],
            "apply-yaml": lambda: (fresh_dir(os.path.join(arun, "out")), fresh_dir(os.path.join(arun, "state")),
                                   sync(), timed([self.bin, "run", "--once", "--config", cfg["apply-yaml"]]))[3],
            "ajv-json": lambda: timed(ajv + ["-d", os.path.join(self.w, "claims-json", "*.json")]),
            "ajv-yaml": lambda: timed(ajv + ["-d", os.path.join(self.w, "claims-yaml", "*.yaml")]),
            "cedar": lambda: timed(cedar),
        }
        if not a.apply:
            del cases["apply-json"], cases["apply-yaml"]
        results = {k: [] for k in cases}
        for i in range(a.runs):  # interleaved, so drift hits everyone alike
            for k, f in cases.items():
                if k.startswith("apply") and i >= a.apply_runs:
                    continue
                results[k].append(f())
            log(f"S1 run {i + 1}/{a.runs}: " + ", ".join(f"{k} {results[k][-1]['wall']:.2f}s" for k in cases
                                                          if len(results[k]) == i + 1))
        shutil.rmtree(arun, ignore_errors=True)
        s = {k: {m: summary([r[m] for r in v]) for m in ("wall", "user", "sys", "rss_kib")} for k, v in results.items()}
        self.details["S1"] = s
        peer_json = s["ajv-json"]["wall"]["median"] + s["cedar"]["wall"]["median"]
        peer_yaml = s["ajv-yaml"]["wall"]["median"] + s["cedar"]["wall"]["median"]
        for k, fmt, peer, target in (("plan-json", "JSON", peer_json, 1.0), ("plan-yaml", "YAML", peer_yaml, 1.5),
                                     ("plan-git", "YAML from git", peer_yaml, 1.5),
                                     ("apply-json", "JSON", peer_json, 1.0), ("apply-yaml", "YAML", peer_yaml, 1.5)):
            if k not in s:
                continue
            w = s[k]["wall"]
            ratio = w["median"] / peer
            peer_name = "ajv " + ("JSON" if fmt == "JSON" else "YAML") + " + cedar"
            ok = w["median"] <= target and ratio <= 1 / 3
            what = "plan" if k.startswith("plan") else f"run --once (apply, {len(results[k])} runs)"
            self.row("S1", f"{what}, {fmt}: wall min / median",
                     f"{w['min']:.2f} / {w['median']:.2f} s",
                     f"{peer_name}: {peer:.2f} s", f"{ratio:.2f}×",
                     f"≤ {target} s and ≤ 0.33×", "met" if ok else "MISSED")
            rss = s[k]["rss_kib"]["max"] / 1024
            self.row("S1", f"{what}, {fmt}: peak RSS", f"{rss:.0f} MiB",
                     f"ajv {s['ajv-json' if fmt == 'JSON' else 'ajv-yaml']['rss_kib']['max'] / 1024:.0f} MiB, "
                     f"cedar {s['cedar']['rss_kib']['max'] / 1024:.0f} MiB", "", "≤ 200 MiB",
                     "met" if rss <= 200 else "MISSED")
        for k in ("ajv-json", "ajv-yaml", "cedar"):
            w = s[k]["wall"]
            self.row("S1", f"peer {k}: wall min / median", "", f"{w['min']:.2f} / {w['median']:.2f} s")

    def check_plan(self, out, err):
        try:
            doc = json.loads(out)
        except ValueError:
            raise RuntimeError(f"plan --format json is not JSON: {out[:300]}") from None
        text = json.dumps(doc)
        creates = text.count('"create"')
        if creates < self.a.n:
            self.notes.append(f"S1 check: the plan JSON mentions \"create\" {creates} times for {self.a.n} claims")
        if err.strip():
            raise RuntimeError(f"converge plan printed diagnostics (the workload must be valid): {err[:1500]}")
