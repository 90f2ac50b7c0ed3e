"""S7: SOPS secrets, cold decrypt cost and warm unwraps."""

import json
import os
import random
import re
import shutil
import statistics
import subprocess
import time

from harness import log, summary, timed, write_config
from servers.daemon import Daemon


class S7:
    def s7(self):
        """Secrets: 10k claims with one SOPS/age secret each (encrypted by
        bench/sopsgen.py in sops's format, a fresh data key per file; a sample
        checked by the real `sops --decrypt`, which is also the peer)."""
        a = self.a
        tools = os.path.join(os.environ.get("CONVERGE_TOOLS_DIR",
                                            os.path.expanduser("~/.cache/converge-test-tools")), "bin")
        sops_bin, keygen = os.path.join(tools, "sops"), os.path.join(tools, "age-keygen")
        try:
            import sopsgen  # noqa: PLC0415 (needs the cryptography package)
        except ImportError as e:
            self.row("S7", "secrets", f"not measured: {e}", "", "", "≤ 1.0 s; 0 X25519 warm", "n/a")
            return
        if not (os.path.isfile(sops_bin) and os.path.isfile(keygen)):
            self.row("S7", "secrets", f"not measured: sops or age-keygen missing in {tools} (scripts/tools)",
                     "", "", "≤ 1.0 s; 0 X25519 warm", "n/a")
            return
        log(f"S7: secrets ({a.n} claims with one SOPS secret each)")
        run = os.path.join(self.run, "s7")
        os.makedirs(run)
        key = os.path.join(run, "age.key")
        subprocess.run([keygen, "-o", key], check=True, capture_output=True)
        with open(key) as f:
            recipient = re.search(r"public key: (age1[0-9a-z]+)", f.read()).group(1)
        ydir = os.path.join(run, "claims")
        os.makedirs(ydir)
        names = sorted(n[:-5] for n in os.listdir(os.path.join(self.w, "claims-json")))
        t0 = time.perf_counter()
        for stem in names:
            with open(os.path.join(self.w, "claims-json", stem + ".json")) as f:
                claim = json.load(f)
            with open(os.path.join(self.w, "claims-yaml", stem + ".yaml")) as f:
                text = f.read()
            y, _ = sopsgen.encrypt_claim(claim, text, recipient, f"s7-{stem}-{random.getrandbits(64):016x}")
            with open(os.path.join(ydir, stem + ".yaml"), "w") as f:
                f.write(y)
        log(f"S7: {len(names)} encrypted claims written in {time.perf_counter() - t0:.1f} s")

        # The peer, and the check that the files are sops's own format.
        env = dict(os.environ, SOPS_AGE_KEY_FILE=key)
        peer = []
        for stem in names[:a.s7_peer]:
            r = timed([sops_bin, "--decrypt", os.path.join(ydir, stem + ".yaml")], env=env)
            peer.append(r["wall"])
        per_file = statistics.median(peer)

        extra = f"secrets:\n  age_key_files: [{json.dumps(key)}]\n"
        plain = write_config(os.path.join(run, "plain.yaml"),
                             [{"name": "bench", "kind": "dir", "path": os.path.join(self.w, "claims-yaml")}],
                             run, self.tags)
        sec = write_config(os.path.join(run, "secrets.yaml"), [{"name": "bench", "kind": "dir", "path": ydir}],
                           run, self.tags, extra)
        p = subprocess.run([self.bin, "plan", "--config", sec, "--format", "json"], capture_output=True, text=True)
        if p.returncode != 1:
            raise RuntimeError(f"converge plan (secrets) exited {p.returncode}: {p.stderr[-2000:]}")
        self.check_plan(p.stdout, p.stderr)
        secrets = sum(1 for st in json.loads(p.stdout)["steps"] if st["kind"] == "Secret")
        if secrets != len(names):
            raise RuntimeError(f"S7: {secrets} Secrets planned for {len(names)} claims")
        results = {"plain": [], "secrets": []}
        for i in range(a.runs):
            results["plain"].append(timed([self.bin, "plan", "--config", plain], ok=(1,)))
            results["secrets"].append(timed([self.bin, "plan", "--config", sec], ok=(1,)))
            log(f"S7 run {i + 1}/{a.runs}: plain {results['plain'][-1]['wall']:.2f}s, "
                f"secrets {results['secrets'][-1]['wall']:.2f}s")
        s = {k: {m: summary([r[m] for r in v]) for m in ("wall", "user", "sys")} for k, v in results.items()}
        cold = s["secrets"]["wall"]["median"] - s["plain"]["wall"]["median"]
        cpu = ((s["secrets"]["user"]["median"] + s["secrets"]["sys"]["median"])
               - (s["plain"]["user"]["median"] + s["plain"]["sys"]["median"]))
        peer_total = per_file * len(names)
        self.row("S1", "YAML + one SOPS secret per claim (plan): wall min / median",
                 f"{s['secrets']['wall']['min']:.2f} / {s['secrets']['wall']['median']:.2f} s",
                 f"same claims without secrets: {s['plain']['wall']['median']:.2f} s", "", "≤ 2.0 s",
                 "met" if s["secrets"]["wall"]["median"] <= 2.0 else "MISSED")
        self.row("S7", f"{len(names) // 1000}k cold decrypts (plan with secrets − without): wall (CPU)",
                 f"{cold:.2f} s ({cpu:.2f} s CPU)",
                 f"sops --decrypt per file: {per_file * 1000:.0f} ms × {len(names)} = {peer_total:.0f} s "
                 f"(median of {len(peer)})", f"{cold / peer_total:.4f}×", "≤ 1.0 s",
                 "met" if cold <= 1.0 else "MISSED")

        # Warm: a daemon on 1k of the claims; one claim changes (a comment).
        ddir = os.path.join(run, "daemon")
        dclaims = os.path.join(ddir, "claims")
        os.makedirs(dclaims)
        for stem in names[:1000]:
            shutil.copy(os.path.join(ydir, stem + ".yaml"), dclaims)
        dcfg = write_config(os.path.join(ddir, "converge.yaml"), [{"name": "bench", "kind": "dir", "path": dclaims}],
                            ddir, self.tags, extra)
        d = Daemon(self.bin, dcfg, os.path.join(ddir, "daemon.log"))
        try:
            d.wait_ready()
            deadline = time.time() + 300
            while d.metrics().get("converge_secrets_decrypts_total", 0) < 1000 and time.time() < deadline:
                time.sleep(0.1)
            m0 = d.metrics()
            with open(os.path.join(dclaims, names[1] + ".yaml"), "a") as f:
                f.write("# warm\n")
            deadline = time.time() + 60
            while d.metrics()["converge_passes_total"] <= m0["converge_passes_total"] and time.time() < deadline:
                time.sleep(0.05)
            m1 = d.metrics()
        finally:
            d.stop()
        unwraps = m1["converge_secrets_key_unwraps_total"] - m0["converge_secrets_key_unwraps_total"]
        decrypts = m1["converge_secrets_decrypts_total"] - m0["converge_secrets_decrypts_total"]
        self.details["S7"] = {"plan": s, "peer_sops_decrypt_s": peer, "cold_unwraps":
                              m0["converge_secrets_key_unwraps_total"], "warm_unwraps": unwraps,
                              "warm_decrypts": decrypts}
        self.row("S7", "1k daemon: X25519 unwraps cold / on a warm one-claim pass (decrypts)",
                 f"{m0['converge_secrets_key_unwraps_total']:.0f} / {unwraps:.0f} ({decrypts:.0f})",
                 "", "", "0 X25519 warm", "met" if unwraps == 0 else "MISSED")
