"""Shared by every scenario: child processes stopped on exit, timing and
metrics parsing, the workload (claims, repository, configs) and waits."""

import atexit
import datetime
import hashlib
import json
import os
import random
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request

import gen  # bench/gen.py


HERE = os.path.dirname(os.path.abspath(__file__))


ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)


CLK_TCK = os.sysconf("SC_CLK_TCK")


GIT_ENV = dict(os.environ, GIT_CONFIG_NOSYSTEM="1", GIT_CONFIG_GLOBAL="/dev/null",
               GIT_TERMINAL_PROMPT="0")


_children = []


def _cleanup(*_):
    for p in reversed(_children):
        if p.poll() is None:
            try:
                p.terminate()
                p.wait(timeout=10)
            except Exception:  # noqa: BLE001
                try:
                    p.kill()
                    p.wait(timeout=5)
                except Exception:  # noqa: BLE001
                    pass
    _children.clear()


def _on_signal(signum, _frame):
    _cleanup()
    sys.exit(128 + signum)


atexit.register(_cleanup)
signal.signal(signal.SIGTERM, _on_signal)
signal.signal(signal.SIGINT, _on_signal)
signal.signal(signal.SIGHUP, _on_signal)


def spawn(cmd, **kw):
    p = subprocess.Popen(cmd, **kw)
    _children.append(p)
    return p


def stop(p, sig=signal.SIGTERM, timeout=30):
    if p.poll() is None:
        p.send_signal(sig)
        try:
            p.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
    if p in _children:
        _children.remove(p)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, timeout=10):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.02)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port}")


def log(msg):
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def loadavg():
    with open("/proc/loadavg") as f:
        return f.read().split()[:3]


def timed(cmd, ok=(0,), env=None, cwd=None, stdout=subprocess.DEVNULL):
    """Runs cmd under /usr/bin/time -v: wall (perf_counter), user, sys, peak RSS."""
    with tempfile.NamedTemporaryFile("r", suffix=".time") as tf:
        start = time.perf_counter()
        p = subprocess.run(["/usr/bin/time", "-v", "-o", tf.name] + cmd, env=env, cwd=cwd,
                           stdout=stdout, stderr=subprocess.PIPE)
        wall = time.perf_counter() - start
        text = tf.read()
    if p.returncode not in ok:
        raise RuntimeError(f"{cmd[0]} exited {p.returncode}: {p.stderr.decode(errors='replace')[-2000:]}")

    def field(name):
        m = re.search(rf"{re.escape(name)}: ([0-9.]+)", text)
        return float(m.group(1)) if m else float("nan")

    return {"wall": wall, "user": field("User time (seconds)"), "sys": field("System time (seconds)"),
            "rss_kib": field("Maximum resident set size (kbytes)"), "rc": p.returncode}


def summary(values):
    values = [v for v in values if v is not None]
    if not values:
        return None
    return {"min": min(values), "median": statistics.median(values), "max": max(values),
            "n": len(values), "all": values}


def pct(values, q):
    """Nearest-rank percentile."""
    s = sorted(values)
    k = max(0, min(len(s) - 1, int(-(-q * len(s) // 100)) - 1))
    return s[k]


def http_get(url, timeout=5):
    with urllib.request.urlopen(url, timeout=timeout) as r:  # noqa: S310 (loopback only)
        return r.status, r.read()


METRIC = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})? ([0-9.eE+-]+|NaN)")


def parse_metrics(text):
    out = {}
    for line in text.splitlines():
        m = METRIC.match(line)
        if m:
            key = m.group(1) + (m.group(2) or "")
            out[key] = float(m.group(3))
            if m.group(2):  # also sum by bare name
                out[m.group(1)] = out.get(m.group(1), 0.0) + float(m.group(3))
    return out


LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def metric(m, name, **labels):
    """The sum of the series of `name` whose labels include `labels` (any order), from parse_metrics."""
    total = 0.0
    for key, value in m.items():
        if key.startswith(name + "{"):
            have = dict(LABEL.findall(key[len(name):]))
            if all(have.get(k) == v for k, v in labels.items()):
                total += value
    return total


def tail(path, n=1500):
    try:
        with open(path, "rb") as f:
            return f.read()[-n:].decode(errors="replace")
    except OSError:
        return ""


def wrk(wrk_bin, url, duration=5, threads=1, conns=32):
    out = subprocess.run([wrk_bin, f"-t{threads}", f"-c{conns}", f"-d{duration}s", "--latency", url],
                         capture_output=True, text=True, check=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([0-9.]+)", out).group(1))
    lat = {}
    for q in ("50", "90", "99"):
        m = re.search(rf"^\s+{q}(?:\.000)?%\s+([0-9.]+)(us|ms|s)\s*$", out, re.M)
        lat[q] = float(m.group(1)) * {"us": 1e-3, "ms": 1.0, "s": 1e3}[m.group(2)] if m else float("nan")
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    sock = re.search(r"Socket errors: (.*)", out)
    return {"rps": rps, "p50_ms": lat["50"], "p90_ms": lat["90"], "p99_ms": lat["99"],
            "non2xx": int(errors.group(1)) if errors else 0, "socket_errors": sock.group(1) if sock else ""}


def write_config(path, sources, run, tags_file, extra=""):
    with open(tags_file) as f:
        tags = f.read()
    text = "sources:\n"
    for s in sources:
        text += "  - " + "\n    ".join(f"{k}: {json.dumps(v)}" for k, v in s.items()) + "\n"
    text += f"""target:
  kind: manifests
  path: {json.dumps(os.path.join(run, 'out'))}
state_dir: {json.dumps(os.path.join(run, 'state'))}
safety:
  max_delete_fraction: 1.0
{extra}{tags}"""
    with open(path, "w") as f:
        f.write(text)
    return path


def sync():
    """Flushes dirty pages, so one apply's writeback is not billed to the next command."""
    subprocess.run(["sync"], check=True)


def fresh_dir(path):
    if os.path.exists(path):
        shutil.rmtree(path)
    os.makedirs(path)
    return path


def workload(work, n, seed):
    """Generates (or reuses) the seeded workload in work/w-<n>-<seed>."""
    with open(os.path.join(HERE, "gen.py"), "rb") as f:
        stamp = hashlib.sha256(f.read()).hexdigest()[:16] + f"-{n}-{seed}"
    out = os.path.join(work, f"w-{n}-{seed}")
    stamp_file = os.path.join(out, ".stamp")
    if os.path.exists(stamp_file) and open(stamp_file).read() == stamp:
        log(f"reusing the workload in {out}")
        return out
    log(f"generating {n} claims (seed {seed}) in {out}")
    fresh_dir(out)
    gen.main(["--n", str(n), "--seed", str(seed), "--out", out, "--git"])
    with open(stamp_file, "w") as f:
        f.write(stamp)
    return out


EXACT = re.compile(r"^  ([a-z0-9-]+): v[0-9.]+$", re.M)


def mutable_claims(claims_dir, count, seed):
    """Names of claims that have a top-level exact `vX.Y.Z` service version."""
    names = sorted(os.listdir(claims_dir))
    rng = random.Random(seed)
    rng.shuffle(names)
    out = []
    for name in names:
        with open(os.path.join(claims_dir, name)) as f:
            if EXACT.search(f.read()):
                out.append(name)
        if len(out) == count:
            break
    return out


def mutate(text, k):
    """Sets the first exact-version service to a new tag: (text, service, tag)."""
    m = EXACT.search(text)
    service, tag = m.group(1), f"v9.{k}.{int(time.time()) % 100000}"
    return text[:m.start()] + f"  {service}: {tag}" + text[m.end():], service, tag


def fast_import_commit(repo, path, data, message):
    b = data.encode()
    msg = message.encode()
    now = int(time.time())
    stream = (b"commit refs/heads/main\n" + f"committer Bench <bench@example.com> {now} +0000\n".encode()
              + b"data %d\n%s\n" % (len(msg), msg) + b"from refs/heads/main^0\n"
              + f"M 100644 inline {path}\n".encode() + b"data %d\n%s\n\n" % (len(b), b))
    subprocess.run(["git", "-C", repo, "fast-import", "--quiet"], input=stream, check=True, env=GIT_ENV)


def wait_for_api(url, text, timeout):
    """Wall-clock time at which GET url first contains text."""
    deadline = time.time() + timeout
    needle = text.encode()
    while time.time() < deadline:
        try:
            if needle in http_get(url, timeout=5)[1]:
                return time.time()
        except Exception:  # noqa: BLE001
            pass
        time.sleep(0.002)
    raise RuntimeError(f"{url} did not show {text!r} within {timeout} s")


def wait_for_log(logfile, offset, match, timeout):
    """The fields of the first JSON log line after offset that matches, with its time."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        with open(logfile, "rb") as f:
            f.seek(offset)
            for line in f:
                try:
                    doc = json.loads(line)
                except ValueError:
                    continue
                fields = doc.get("fields", {})
                if match(fields):
                    ts = datetime.datetime.fromisoformat(doc["timestamp"].replace("Z", "+00:00"))
                    return dict(fields, time=ts.timestamp())
        time.sleep(0.01)
    raise RuntimeError(f"no matching log line in {logfile} within {timeout} s")


def wait_for_text(path, text, timeout):
    deadline = time.perf_counter() + timeout
    needle = text.encode()
    while time.perf_counter() < deadline:
        try:
            with open(path, "rb") as f:
                if needle in f.read():
                    return time.perf_counter()
        except OSError:
            pass
        time.sleep(0.002)
    raise RuntimeError(f"{path} did not show {text!r} within {timeout} s")
