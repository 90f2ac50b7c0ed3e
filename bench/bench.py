#!/usr/bin/env python3
"""converge benchmarks: scenarios S1-S9 of shared/PERFORMANCE.md against their
peers, measured in the same invocation. Run through `bench/run` (which installs
the peers and builds converge); see bench/README.md.

Everything runs on loopback; every server started here binds 127.0.0.1 on a
free port and is stopped on exit (normal, error or signal). Only the Python
standard library is used.
"""

import argparse
import atexit
import concurrent.futures
import datetime
import hashlib
import hmac
import http.client
import json
import math
import os
import platform
import random
import re
import resource
import shutil
import signal
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
import gen  # noqa: E402  (bench/gen.py)

CLK_TCK = os.sysconf("SC_CLK_TCK")
GIT_ENV = dict(os.environ, GIT_CONFIG_NOSYSTEM="1", GIT_CONFIG_GLOBAL="/dev/null",
               GIT_TERMINAL_PROMPT="0")

# ---------------------------------------------------------------- processes

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


# ---------------------------------------------------------------- measuring

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

# ---------------------------------------------------------------- servers

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


def tail(path, n=1500):
    try:
        with open(path, "rb") as f:
            return f.read()[-n:].decode(errors="replace")
    except OSError:
        return ""


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


class Nginx:
    def __init__(self, nginx, run, files):
        """Serves `files` ({url path: bytes}) from run/www."""
        os.makedirs(run, exist_ok=True)
        os.chmod(run, 0o755)
        www = os.path.join(run, "www")
        for path, body in files.items():
            full = os.path.join(www, path.lstrip("/"))
            os.makedirs(os.path.dirname(full), exist_ok=True)
            with open(full, "wb") as f:
                f.write(body)
        for dirpath, _dirs, names in os.walk(run):
            os.chmod(dirpath, 0o755)
            for n in names:
                os.chmod(os.path.join(dirpath, n), 0o644)
        self.port = free_port()
        conf = os.path.join(run, "nginx.conf")
        tmp = os.path.join(run, "tmp")
        os.makedirs(tmp, exist_ok=True)
        with open(conf, "w") as f:
            f.write(f"""worker_processes auto;
daemon off;
pid {run}/nginx.pid;
error_log {run}/error.log warn;
events {{ worker_connections 1024; }}
http {{
  access_log off;
  keepalive_requests 1000000;
  client_body_temp_path {tmp}/body;
  proxy_temp_path {tmp}/proxy;
  fastcgi_temp_path {tmp}/fastcgi;
  uwsgi_temp_path {tmp}/uwsgi;
  scgi_temp_path {tmp}/scgi;
  server {{
    listen 127.0.0.1:{self.port};
    location / {{ root {www}; default_type application/json; }}
  }}
}}
""")
        self.p = spawn([nginx, "-c", conf, "-e", f"{run}/error.log"], stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL)
        wait_port(self.port)

    def stop(self):
        stop(self.p, signal.SIGQUIT)


# The Garage S3 server for S3 (bucket): started and provisioned as
# tests/it/support/garage.rs does, under scripts/garage (which also stops it if this
# process dies without cleaning up), with a fixed SigV4 key.
GARAGE_KEY_ID = "GK0c0de0c0de0c0de0c0de0c01"
GARAGE_SECRET = "5ec2e7a15ec2e7a15ec2e7a15ec2e7a15ec2e7a15ec2e7a15ec2e7a15ec2e7a1"
GARAGE_REGION = "garage"


def garage_binary(explicit=None):
    """--garage, $GARAGE_BIN, `garage` on PATH, or scripts/test's install root; None if absent."""
    if explicit:
        return explicit if os.path.isfile(explicit) else None
    if os.environ.get("GARAGE_BIN"):
        return os.environ["GARAGE_BIN"] if os.path.isfile(os.environ["GARAGE_BIN"]) else None
    tools = os.environ.get("CONVERGE_TOOLS_DIR", os.path.expanduser("~/.cache/converge-test-tools"))
    for cand in (shutil.which("garage"), os.path.join(tools, "bin", "garage")):
        if cand and os.path.isfile(cand):
            return cand
    return None


class Garage:
    """A one-node Garage on two free loopback ports, its data in `run`, one bucket."""

    def __init__(self, binary, run, bucket="claims"):
        self.bin, self.run, self.bucket = binary, fresh_dir(run), bucket
        self.port, rpc = free_port(), free_port()
        self.conf = os.path.join(run, "garage.toml")
        with open(self.conf, "w") as f:
            f.write(f"""metadata_dir = "{run}/meta"
data_dir = "{run}/data"
db_engine = "sqlite"
replication_factor = 1
rpc_bind_addr = "127.0.0.1:{rpc}"
rpc_public_addr = "127.0.0.1:{rpc}"
rpc_secret = "{os.urandom(32).hex()}"
[s3_api]
s3_region = "{GARAGE_REGION}"
api_bind_addr = "127.0.0.1:{self.port}"
root_domain = ".s3.garage.localhost"
""")
        self.key_id_file = os.path.join(run, "key-id")
        self.secret_file = os.path.join(run, "secret")
        with open(self.key_id_file, "w") as f:
            f.write(GARAGE_KEY_ID + "\n")
        with open(self.secret_file, "w") as f:
            f.write(GARAGE_SECRET + "\n")
        self.log = open(os.path.join(run, "garage.log"), "wb")
        self.p = spawn([os.path.join(ROOT, "scripts", "garage"), str(os.getpid()), self.conf],
                       env=dict(os.environ, GARAGE_BIN=self.bin, RUST_LOG="garage=warn"),
                       stdin=subprocess.DEVNULL, stdout=self.log, stderr=self.log)
        deadline = time.time() + 30
        while True:
            if self.p.poll() is not None:
                raise RuntimeError(f"garage exited {self.p.returncode}: {tail(self.log.name)}")
            if self.cli("status", check=False).returncode == 0:
                try:
                    wait_port(self.port, timeout=0.5)
                    break
                except RuntimeError:
                    pass
            if time.time() > deadline:
                raise RuntimeError(f"garage did not start: {tail(self.log.name)}")
            time.sleep(0.1)
        node = self.cli("node", "id", "-q").stdout.split("@")[0].strip()
        self.cli("layout", "assign", "-z", "dc1", "-c", "1G", node)
        self.cli("layout", "apply", "--version", "1")
        self.cli("key", "import", "--yes", "-n", "converge-bench", GARAGE_KEY_ID, GARAGE_SECRET)
        self.cli("bucket", "create", bucket)
        self.cli("bucket", "allow", "--read", "--write", "--owner", bucket, "--key", "converge-bench")

    def cli(self, *args, check=True):
        p = subprocess.run([self.bin, "-c", self.conf, *args], capture_output=True, text=True,
                           env=dict(os.environ, RUST_LOG="warn"))
        if check and p.returncode != 0:
            raise RuntimeError(f"garage {' '.join(args)}: {p.stdout}{p.stderr}")
        return p

    def endpoint(self):
        return f"http://127.0.0.1:{self.port}"

    def put_all(self, files, threads=16):
        """PUTs {key: local path} into the bucket, `threads` at a time: seconds taken."""
        local = threading.local()

        def put(item):
            key, path = item
            with open(path, "rb") as f:
                body = f.read()
            for attempt in range(3):
                conn = getattr(local, "conn", None)
                if conn is None:
                    conn = local.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
                uri = "/" + urllib.parse.quote(f"{self.bucket}/{key}", safe="/-_.~")
                try:
                    conn.request("PUT", uri, body=body, headers=sigv4_headers(
                        "PUT", f"127.0.0.1:{self.port}", uri, body, GARAGE_KEY_ID, GARAGE_SECRET, GARAGE_REGION))
                    r = conn.getresponse()
                    text = r.read()
                except (OSError, http.client.HTTPException):
                    conn.close()
                    local.conn = None
                    if attempt == 2:
                        raise
                    continue
                if r.status != 200:
                    raise RuntimeError(f"PUT {uri}: HTTP {r.status} {text[:300]!r}")
                return

        t0 = time.perf_counter()
        with concurrent.futures.ThreadPoolExecutor(threads) as pool:
            for _ in pool.map(put, sorted(files.items())):
                pass
        return time.perf_counter() - t0

    def stop(self):
        stop(self.p)  # scripts/garage stops the server on SIGTERM
        self.log.close()


def sigv4_headers(method, host, uri, body, key_id, secret, region, service="s3"):
    """AWS Signature Version 4 headers for a request without a query string (the payload signed)."""
    now = datetime.datetime.now(datetime.timezone.utc)
    amz_date, day = now.strftime("%Y%m%dT%H%M%SZ"), now.strftime("%Y%m%d")
    payload = hashlib.sha256(body).hexdigest()
    headers = {"host": host, "x-amz-content-sha256": payload, "x-amz-date": amz_date}
    signed = ";".join(sorted(headers))
    canonical = "\n".join([method, uri, "", *(f"{k}:{headers[k]}" for k in sorted(headers)), "", signed, payload])
    scope = f"{day}/{region}/{service}/aws4_request"
    to_sign = "\n".join(["AWS4-HMAC-SHA256", amz_date, scope, hashlib.sha256(canonical.encode()).hexdigest()])
    k = ("AWS4" + secret).encode()
    for part in (day, region, service, "aws4_request"):
        k = hmac.new(k, part.encode(), hashlib.sha256).digest()
    signature = hmac.new(k, to_sign.encode(), hashlib.sha256).hexdigest()
    return {"Host": host, "x-amz-content-sha256": payload, "x-amz-date": amz_date,
            "Content-Length": str(len(body)),
            "Authorization": f"AWS4-HMAC-SHA256 Credential={key_id}/{scope}, SignedHeaders={signed}, "
                             f"Signature={signature}"}


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


# ---------------------------------------------------------------- the registry (S9)

def registry_binary():
    """The CNCF distribution registry: REGISTRY_BIN, PATH, then scripts/tools' cache."""
    if os.environ.get("REGISTRY_BIN"):
        return os.environ["REGISTRY_BIN"]
    dirs = os.environ.get("PATH", "").split(":") + [os.path.expanduser("~/.cache/converge-test-tools/bin")]
    for d in dirs:
        path = os.path.join(d, "registry")
        if os.path.isfile(path) and os.access(path, os.X_OK):
            return path
    return None


EMPTY_CONFIG = "sha256:" + hashlib.sha256(b"{}").hexdigest()


class Registry:
    """The distribution registry on a free loopback port, no auth; tags pushed by plain HTTP
    (a `{}` config blob per repository, one OCI manifest with no layers per tag)."""

    def __init__(self, binary, run):
        self.port = free_port()
        config = os.path.join(run, "registry.yml")
        with open(config, "w") as f:
            f.write(f"version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: true\nstorage:\n"
                    f"  filesystem:\n    rootdirectory: {os.path.join(run, 'registry-data')}\n"
                    f"http:\n  addr: 127.0.0.1:{self.port}\n")
        self.p = spawn([binary, "serve", config], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_port(self.port)
        self.local = threading.local()

    def _request(self, method, path, body=b"", headers=None):
        conn = getattr(self.local, "conn", None)
        if conn is None:
            conn = self.local.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
        conn.request(method, path, body=body, headers=dict(headers or {}, **{"Content-Length": str(len(body))}))
        r = conn.getresponse()
        r.read()
        return r.status, r.headers

    def push(self, repository, tag, blob=True):
        if blob:
            status, headers = self._request("POST", f"/v2/{repository}/blobs/uploads/")
            assert status == 202, status
            loc = headers["Location"].replace(f"http://127.0.0.1:{self.port}", "")
            sep = "&" if "?" in loc else "?"
            status, _ = self._request("PUT", f"{loc}{sep}digest={EMPTY_CONFIG}", b"{}",
                                      {"Content-Type": "application/octet-stream"})
            assert status == 201, status
        manifest = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                               "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                                          "digest": EMPTY_CONFIG, "size": 2},
                               "layers": [], "annotations": {"tag": tag}}).encode()
        status, _ = self._request("PUT", f"/v2/{repository}/manifests/{tag}", manifest,
                                  {"Content-Type": "application/vnd.oci.image.manifest.v1+json"})
        assert status == 201, (repository, tag, status)

    def stop(self):
        stop(self.p)


class CountingProxy:
    """A TCP relay in front of a loopback port that counts the bytes it carries both ways."""

    def __init__(self, target):
        self.target = target
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.lock = threading.Lock()
        self.sent = self.received = 0
        self.done = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while not self.done:
            try:
                client, _ = self.sock.accept()
            except OSError:
                return
            try:
                server = socket.create_connection(("127.0.0.1", self.target))
            except OSError:
                client.close()
                continue
            threading.Thread(target=self._pump, args=(client, server, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(server, client, False), daemon=True).start()

    def _pump(self, src, dst, upstream):
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                with self.lock:
                    if upstream:
                        self.sent += len(data)
                    else:
                        self.received += len(data)
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def counts(self):
        with self.lock:
            return self.sent, self.received

    def stop(self):
        self.done = True
        self.sock.close()

# ---------------------------------------------------------------- Kubernetes (S8)

def kube_tools_bin():
    """Where scripts/tools installs etcd, kube-apiserver, kube-controller-manager and kubectl."""
    tools = os.environ.get("CONVERGE_TOOLS_DIR", os.path.expanduser("~/.cache/converge-test-tools"))
    return os.path.join(tools, "bin")


KUBE_OPENSSL_CNF = """[req]
distinguished_name = dn
[dn]
[ca]
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
[server]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = serverAuth
subjectAltName = IP:127.0.0.1, DNS:localhost, DNS:kubernetes, DNS:kubernetes.default, DNS:kubernetes.default.svc, DNS:kubernetes.default.svc.cluster.local, IP:10.96.0.1
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
"""


def make_kube_certs(d):
    """The test CA, the API server's certificate for 127.0.0.1 and the ServiceAccount signing
    key pair, made by openssl exactly as tests/it/support/kube.rs makes them."""
    with open(os.path.join(d, "openssl.cnf"), "w") as f:
        f.write(KUBE_OPENSSL_CNF)
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    cfg = ["-config", "openssl.cnf"]
    for args in (
        ["req", "-x509", "-extensions", "ca", "-days", "30", *cfg, *ec, "-subj", "/CN=converge-bench-ca",
         "-keyout", "ca.key", "-out", "ca.crt"],
        ["req", "-new", *cfg, *ec, "-subj", "/CN=kube-apiserver", "-keyout", "apiserver.key",
         "-out", "apiserver.csr"],
        ["x509", "-req", "-in", "apiserver.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
         "-set_serial", "0x" + os.urandom(8).hex(), "-days", "30", "-extfile", "openssl.cnf",
         "-extensions", "server", "-out", "apiserver.crt"],
        ["genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out", "sa.key"],
        ["pkey", "-in", "sa.key", "-pubout", "-out", "sa.pub"],
    ):
        subprocess.run(["openssl", *args], cwd=d, check=True, stdin=subprocess.DEVNULL,
                       stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


WRITE_VERBS = ("APPLY", "PATCH", "CREATE", "UPDATE", "DELETE", "DELETECOLLECTION", "POST", "PUT")


class KubeCluster:
    """etcd, kube-apiserver and kube-controller-manager (namespace and garbage-collector
    controllers only) on free loopback ports: the recipe and flags of tests/it/support/kube.rs
    (TLS with an openssl-made CA, a static admin token in system:masters, RBAC). Each server
    runs under scripts/tether, which stops it when this process goes away, even with kill -9."""

    def __init__(self, run):
        t0 = time.perf_counter()
        self.dir = fresh_dir(run)
        os.makedirs(os.path.join(self.dir, "apiserver-certs"))
        self.bin = kube_tools_bin()
        self.procs = []
        make_kube_certs(self.dir)
        self.ca = os.path.join(self.dir, "ca.crt")
        self.token = os.urandom(16).hex()
        with open(os.path.join(self.dir, "tokens.csv"), "w") as f:
            f.write(f'{self.token},admin,admin-uid,"system:masters"\n')
        self.ssl = ssl.create_default_context(cafile=self.ca)
        # etcd
        client, peer = free_port(), free_port()
        self.etcd_url = f"http://127.0.0.1:{client}"
        peer_url = f"http://127.0.0.1:{peer}"
        self._spawn("etcd", [
            "--name=converge-bench", f"--data-dir={self.dir}/etcd", f"--listen-client-urls={self.etcd_url}",
            f"--advertise-client-urls={self.etcd_url}", f"--listen-peer-urls={peer_url}",
            f"--initial-advertise-peer-urls={peer_url}", f"--initial-cluster=converge-bench={peer_url}",
            "--unsafe-no-fsync", "--log-level=warn"], grace=5)
        deadline = time.time() + 90
        while True:
            try:
                if b'"health":"true"' in http_get(self.etcd_url + "/health", timeout=2)[1]:
                    break
            except Exception:  # noqa: BLE001
                pass
            self._check("etcd", deadline)
            time.sleep(0.05)
        # kube-apiserver
        self.port = free_port()
        self.url = f"https://127.0.0.1:{self.port}"
        d = self.dir
        self._spawn("kube-apiserver", [
            f"--etcd-servers={self.etcd_url}", "--bind-address=127.0.0.1", "--advertise-address=127.0.0.1",
            f"--secure-port={self.port}", f"--cert-dir={d}/apiserver-certs", f"--tls-cert-file={d}/apiserver.crt",
            f"--tls-private-key-file={d}/apiserver.key",
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
            f"--service-account-key-file={d}/sa.pub", f"--service-account-signing-key-file={d}/sa.key",
            "--service-cluster-ip-range=10.96.0.0/12", f"--token-auth-file={d}/tokens.csv",
            "--authorization-mode=RBAC", "--disable-admission-plugins=ServiceAccount",
            "--endpoint-reconciler-type=none", "--profiling=false"], grace=0)
        self.kubeconfig = os.path.join(d, "admin.kubeconfig")
        with open(self.kubeconfig, "w") as f:
            f.write(f"""apiVersion: v1
kind: Config
clusters:
- name: bench
  cluster:
    server: {self.url}
    certificate-authority: {self.ca}
users:
- name: bench
  user:
    token: {self.token}
contexts:
- name: bench
  context:
    cluster: bench
    user: bench
current-context: bench
""")
        deadline = time.time() + 90
        while True:
            try:
                if self.request("GET", "/readyz", timeout=5)[0] == 200:
                    break
            except Exception:  # noqa: BLE001
                pass
            self._check("kube-apiserver", deadline)
            time.sleep(0.1)
        self._spawn("kube-controller-manager", [
            f"--kubeconfig={self.kubeconfig}", "--controllers=namespace,garbagecollector", "--leader-elect=false",
            "--bind-address=127.0.0.1", "--secure-port=0", "--use-service-account-credentials=false"], grace=0)
        self.ready_s = time.perf_counter() - t0

    def _spawn(self, name, args, grace):
        logf = open(os.path.join(self.dir, f"{name}.log"), "ab")
        p = spawn([os.path.join(ROOT, "scripts", "tether"), "--grace", str(grace), os.path.join(self.bin, name),
                   *args], stdin=subprocess.PIPE, stdout=logf, stderr=logf)
        self.procs.append((name, p, logf))

    def _check(self, name, deadline):
        for n, p, _ in self.procs:
            if p.poll() is not None:
                raise RuntimeError(f"{n} exited {p.returncode}: {tail(os.path.join(self.dir, n + '.log'))}")
        if time.time() > deadline:
            raise RuntimeError(f"{name} not ready: {tail(os.path.join(self.dir, name + '.log'))}")

    def connection(self, timeout=60):
        return http.client.HTTPSConnection("127.0.0.1", self.port, context=self.ssl, timeout=timeout)

    def request(self, method, path, body=None, headers=None, conn=None, timeout=60):
        """(status, body) of one request with the admin token; on `conn` when given (kept open)."""
        h = {"Authorization": "Bearer " + self.token}
        h.update(headers or {})
        c = conn or self.connection(timeout)
        try:
            c.request(method, path, body=body, headers=h)
            r = c.getresponse()
            return r.status, r.read()
        finally:
            if conn is None:
                c.close()

    def get_json(self, path):
        status, body = self.request("GET", path)
        if status != 200:
            raise RuntimeError(f"GET {path}: HTTP {status} {body[:300]!r}")
        return json.loads(body)

    def requests(self):
        """apiserver_request_total from /metrics: {(verb, resource, subresource): count}, codes
        summed; also, under ("~seconds", "", ""), the sum of apiserver_request_duration_seconds
        over the verbs that are not long-running (all but WATCH and CONNECT)."""
        status, body = self.request("GET", "/metrics")
        if status != 200:
            raise RuntimeError(f"GET /metrics: HTTP {status}")
        out = {("~seconds", "", ""): 0.0}
        for line in body.decode().splitlines():
            if line.startswith("apiserver_request_total{"):
                labels, value = line[len("apiserver_request_total"):].rsplit(" ", 1)
                have = dict(LABEL.findall(labels))
                key = (have.get("verb", ""), have.get("resource", ""), have.get("subresource", ""))
                out[key] = out.get(key, 0) + float(value)
            elif line.startswith("apiserver_request_duration_seconds_sum{"):
                labels, value = line[len("apiserver_request_duration_seconds_sum"):].rsplit(" ", 1)
                if dict(LABEL.findall(labels)).get("verb") not in ("WATCH", "CONNECT"):
                    out[("~seconds", "", "")] += float(value)
        return out

    def cpu_seconds(self):
        """utime + stime of the API server, etcd and the controller manager (the tethers' children)."""
        total = 0.0
        for _, p, _ in self.procs:
            for child in child_pids(p.pid):
                try:
                    with open(f"/proc/{child}/stat") as f:
                        fields = f.read().rsplit(")", 1)[1].split()
                    total += (int(fields[11]) + int(fields[12])) / CLK_TCK
                except OSError:
                    pass
        return total

    def stop(self):
        for name, p, logf in reversed(self.procs):
            try:
                p.stdin.close()  # the tether stops its server when its stdin closes
            except OSError:
                pass
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.terminate()
                p.wait(timeout=10)
            if p in _children:
                _children.remove(p)
            logf.close()
        self.procs = []


def kube_versions():
    """The versions scripts/tools stamped on its builds."""
    def stamp(tool):
        try:
            with open(os.path.join(kube_tools_bin(), f".{tool}.version")) as f:
                return f.read().strip()
        except OSError:
            return "not installed"
    return (f"kube-apiserver, kube-controller-manager, kubectl {stamp('kube-apiserver')}, etcd {stamp('etcd')} "
            "(scripts/tools)")


def child_pids(pid):
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(x) for x in f.read().split()]
    except OSError:
        return []


def request_delta(before, after, scrapes=1):
    """The increase between two KubeCluster.requests(), as {"VERB resource[/subresource]": count}
    ("VERB -" for non-resource URLs: discovery, /metrics). The /metrics scrape that read
    `before` is counted in `after` (a request is counted when it completes): `scrapes` of
    them are taken off."""
    out = {}
    for (verb, res, sub), v in after.items():
        d = v - before.get((verb, res, sub), 0)
        if d > 0 and not verb.startswith("~"):
            key = f"{verb} {res or '-'}" + (f"/{sub}" if sub else "")
            out[key] = int(round(d))
    if "GET -" in out:
        out["GET -"] -= min(scrapes, out["GET -"])
        if not out["GET -"]:
            del out["GET -"]
    return dict(sorted(out.items()))


# Requests of the API server itself and of the controller manager, whatever the client does:
# its identity lease renewed every 10 s, a ClusterIP (an IPAddress object) allocated per Service
# created, and the events of those. Shown apart from the client's requests.
BACKGROUND = {"leases", "ipaddresses", "servicecidrs", "events"}


def in_flight(before, after, seconds):
    """Requests in flight on average over `seconds` (Little's law: the server-side time of the
    requests that completed in the window ÷ the window)."""
    key = ("~seconds", "", "")
    return (after[key] - before[key]) / seconds


def split_background(delta):
    """(the client's requests, the API server's own) of a request_delta."""
    ours, theirs = {}, {}
    for k, n in delta.items():
        res = k.split(" ", 1)[1].split("/", 1)[0]
        (theirs if res in BACKGROUND else ours)[k] = n
    return ours, theirs


def by_verb(delta):
    out = {}
    for k, n in delta.items():
        verb = k.split(" ", 1)[0]
        out[verb] = out.get(verb, 0) + n
    return dict(sorted(out.items()))


def shown_verbs(delta, background=True, per=1):
    """"APPLY 657, GET 21, LIST 1; non-resource GET 2 (API server's own: POST ipaddresses 170)":
    the client's requests by verb, GETs of non-resource URLs (discovery, OpenAPI) apart, then
    the API server's own; every count divided by `per`."""
    ours, theirs = split_background(delta)
    plain = {k: n for k, n in ours.items() if not k.startswith("GET -")}
    nonres = sum(n for k, n in ours.items() if k.startswith("GET -"))
    fmt = (lambda n: f"{n / per:.2f}") if per != 1 else str
    text = ", ".join(f"{k} {fmt(n)}" for k, n in by_verb(plain).items()) or "none"
    if nonres:
        text += f"; non-resource GET {fmt(nonres)}"
    if background and theirs:
        text += " (API server's own: " + ", ".join(f"{k} {fmt(n)}" for k, n in theirs.items()) + ")"
    return text


def writes_and_object_reads(delta):
    """(writes, GETs of objects) by the client: discovery and other non-resource GETs are not
    object reads, and the API server's own background requests are not the client's."""
    ours, _ = split_background(delta)
    writes = sum(n for k, n in ours.items() if k.split(" ", 1)[0] in WRITE_VERBS)
    gets = sum(n for k, n in ours.items() if k.startswith("GET ") and not k.startswith("GET -"))
    return writes, gets


MANIFEST_FIELD = {
    "apiVersion": re.compile(r"^apiVersion: *[\"']?([^\"'\s]+)", re.M),
    "kind": re.compile(r"^kind: *[\"']?([^\"'\s]+)", re.M),
    "name": re.compile(r"^metadata:\n(?:  .*\n)*?  name: *[\"']?([^\"'\s]+)", re.M),
    "namespace": re.compile(r"^metadata:\n(?:  .*\n)*?  namespace: *[\"']?([^\"'\s]+)", re.M),
}


def load_manifests(out):
    """Every object the manifests target wrote under `out` (one per file; the
    `.converge-inventory.json` files are not objects): dicts with the file, its bytes and identity."""
    objects = []
    for env in sorted(os.listdir(out)):
        d = os.path.join(out, env)
        if not os.path.isdir(d):
            continue
        for name in sorted(os.listdir(d)):
            if not name.endswith(".yaml"):
                continue
            path = os.path.join(d, name)
            with open(path, "rb") as f:
                body = f.read()
            text = body.decode()
            o = {"file": path, "env": env, "body": body}
            for k, rx in MANIFEST_FIELD.items():
                m = rx.search(text)
                o[k] = m.group(1) if m else None
            if not (o["apiVersion"] and o["kind"] and o["name"]):
                raise RuntimeError(f"{path}: no apiVersion, kind or metadata.name")
            objects.append(o)
    return objects


def kube_paths(cluster, objects):
    """Sets each object's server-side apply path, from the API server's discovery."""
    found = {}
    for gv in sorted({o["apiVersion"] for o in objects}):
        doc = cluster.get_json("/api/v1" if gv == "v1" else f"/apis/{gv}")
        for r in doc["resources"]:
            if "/" not in r["name"]:
                found[(gv, r["kind"])] = (r["name"], r["namespaced"])
    for o in objects:
        plural, namespaced = found[(o["apiVersion"], o["kind"])]
        base = "/api/v1" if o["apiVersion"] == "v1" else f"/apis/{o['apiVersion']}"
        ns = o["namespace"] or o["env"]
        o["resource"] = plural
        o["path"] = (f"{base}/namespaces/{ns}/{plural}/{o['name']}" if namespaced
                     else f"{base}/{plural}/{o['name']}")


def floor_apply(cluster, objects, threads=8, manager="bench-floor"):
    """The floor: every object's server-side apply PATCH (application/apply-patch+yaml, the
    rendered bytes as they are, fieldManager, force=true) from a minimal client, `threads`
    requests in flight on kept-alive TLS connections; Namespaces first (a namespaced object
    needs its Namespace), then everything else. (seconds, process CPU seconds, errors)."""
    local = threading.local()
    errors = []
    headers = {"Content-Type": "application/apply-patch+yaml", "Accept": "application/json"}

    def one(o):
        path = o["path"] + f"?fieldManager={manager}&force=true"
        for attempt in range(3):
            conn = getattr(local, "conn", None)
            if conn is None:
                conn = local.conn = cluster.connection()
            try:
                status, body = cluster.request("PATCH", path, o["body"], headers, conn=conn)
            except (OSError, http.client.HTTPException) as e:
                conn.close()
                local.conn = None
                if attempt == 2:
                    errors.append(f"{path}: {e}")
                continue
            if status not in (200, 201):
                errors.append(f"{path}: HTTP {status} {body[:200]!r}")
            return

    namespaces = [o for o in objects if o["kind"] == "Namespace"]
    rest = [o for o in objects if o["kind"] != "Namespace"]
    cpu0, t0 = time.process_time(), time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(threads) as pool:
        for phase in (namespaces, rest):
            for _ in pool.map(one, phase):
                pass
    return time.perf_counter() - t0, time.process_time() - cpu0, errors


def count_applied(cluster, objects, skip_namespace=None):
    """Objects carrying converge's managed-by label on the server, per kind (LIST, all namespaces)."""
    counts = {}
    for gv, kind in sorted({(o["apiVersion"], o["kind"]) for o in objects}):
        plural = next(o["resource"] for o in objects if o["kind"] == kind and o["apiVersion"] == gv)
        base = "/api/v1" if gv == "v1" else f"/apis/{gv}"
        doc = cluster.get_json(f"{base}/{plural}?labelSelector=app.kubernetes.io%2Fmanaged-by%3Dconverge")
        counts[kind] = sum(1 for i in doc["items"] if not skip_namespace or (
            i["metadata"].get("namespace") != skip_namespace and i["metadata"]["name"] != skip_namespace))
    return counts


class DeploymentWatch:
    """Watches one Deployment from its current resourceVersion; `.seen` is set, with `.at`
    (time.perf_counter()) when a version whose containers' images contain `tag` arrives."""

    def __init__(self, cluster, namespace, name, tag):
        base = f"/apis/apps/v1/namespaces/{namespace}/deployments"
        doc = cluster.get_json(f"{base}/{name}")
        self.rv = doc["metadata"]["resourceVersion"]
        self.tag, self.at, self.seen = tag, None, threading.Event()
        self.conn = cluster.connection(timeout=120)
        self.conn.request("GET", f"{base}?watch=true&fieldSelector=metadata.name%3D{name}"
                                 f"&resourceVersion={self.rv}",
                          headers={"Authorization": "Bearer " + cluster.token})
        self.r = self.conn.getresponse()
        if self.r.status != 200:
            raise RuntimeError(f"watch {namespace}/{name}: HTTP {self.r.status}")
        self.t = threading.Thread(target=self._run, daemon=True)
        self.t.start()

    def _run(self):
        try:
            while not self.seen.is_set():
                line = self.r.readline()
                if not line:
                    return
                at = time.perf_counter()
                ev = json.loads(line)
                spec = ev.get("object", {}).get("spec", {}).get("template", {}).get("spec", {})
                if any(self.tag in c.get("image", "") for c in spec.get("containers", [])):
                    self.at = at
                    self.seen.set()
        except Exception:  # noqa: BLE001 (closed)
            return

    def wait(self, timeout):
        if not self.seen.wait(timeout):
            raise RuntimeError(f"the Deployment did not show {self.tag} within {timeout} s")
        return self.at

    def close(self):
        self.seen.set()
        try:
            self.conn.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.conn.close()


def kube_config(path, claims, run, kubeconfig, tags_file, concurrency=8, extra=""):
    with open(tags_file) as f:
        tags = f.read()
    with open(path, "w") as f:
        f.write(f"""sources:
  - name: bench
    kind: dir
    path: {json.dumps(claims)}
target:
  kind: kubernetes
  kubeconfig: {json.dumps(kubeconfig)}
  inventory_namespace: converge-system
  concurrency: {concurrency}
state_dir: {json.dumps(os.path.join(run, 'state'))}
safety:
  max_delete_fraction: 1.0
{extra}{tags}""")
    return path


# ---------------------------------------------------------------- workload

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


# ---------------------------------------------------------------- the bench

class Bench:
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

    # -- S2 + S3 (daemon on a git source, 1 s polls) -----------------------
    def s2_s3(self):
        a = self.a
        log("S2/S3: daemon on a git source over git daemon, 1 s polls")
        run = fresh_dir(os.path.join(self.run, "s2"))
        repo = self.rw_repo("envs")
        pusher = os.path.join(run, "pusher.git")
        subprocess.run(["git", "clone", "-q", "--bare", repo, pusher], check=True, env=GIT_ENV)
        peer_repo = os.path.join(run, "peer.git")
        subprocess.run(["git", "clone", "-q", "--bare", self.git.url("envs.git"), peer_repo], check=True, env=GIT_ENV)
        cfg = write_config(os.path.join(run, "c.yaml"), [self.git_source("envs.git", "1s")], run, self.tags)
        d = Daemon(self.bin, cfg, os.path.join(run, "daemon.log"))
        try:
            ready = d.wait_ready()
            self.details.setdefault("daemon", {})["git_first_ready_s"] = ready
            log(f"S2: daemon ready after {ready:.1f} s")
            time.sleep(2)
            names = mutable_claims(os.path.join(self.w, "claims-yaml"), a.runs, a.seed + 2)
            paths = {}
            ls = subprocess.run(["git", "-C", pusher, "ls-tree", "-r", "--name-only", "main"], capture_output=True,
                                text=True, check=True, env=GIT_ENV).stdout.split()
            for p in ls:
                paths[os.path.basename(p)] = p
            samples = []
            for k, name in enumerate(names):
                with open(os.path.join(self.w, "claims-yaml", name)) as f:
                    text, service, tag = mutate(f.read(), k)
                fast_import_commit(pusher, paths[name], text, f"bench: {name} {service} {tag}")
                before = d.metrics()
                offset = os.path.getsize(d.logfile)
                subprocess.run(["git", "-C", pusher, "push", "-q", repo, "main"], check=True, env=GIT_ENV)
                pushed = time.time()
                env_url = f"{d.url}/api/v1/environments/{name.rsplit('.', 1)[0]}"
                ready_at = wait_for_api(env_url, tag, 30)
                done = wait_for_log(d.logfile, offset, lambda f: f.get("message") == "pass done"
                                    and f.get("parsed", 0) >= 1, 30)
                after = d.metrics()
                # The ready histogram is observed when `Daemon::pass` returns,
                # just after the view swap (the pass's temporaries are dropped
                # in between): give it a moment.
                count = "converge_pass_ready_seconds_count"
                deadline = time.time() + 2
                while count in after and after[count] <= before.get(count, 0) and time.time() < deadline:
                    time.sleep(0.005)
                    after = d.metrics()
                # The pass began when the poll that saw the commit started:
                # its `pass done` time minus its duration.
                started = done["time"] - done["duration_ms"] / 1000
                delta = {c: after[f"converge_claims_{c}_total"] - before[f"converge_claims_{c}_total"]
                         for c in ("parsed", "validated", "authorized", "rendered")}
                # Cross-check: the daemon's own pass start → API serving it
                # (`converge_pass_ready_seconds`, after the state commit and
                # the view swap), averaged over the passes of this push.
                ready_n = (after.get("converge_pass_ready_seconds_count", 0)
                           - before.get("converge_pass_ready_seconds_count", 0))
                ready_sum = (after.get("converge_pass_ready_seconds_sum", 0)
                             - before.get("converge_pass_ready_seconds_sum", 0))
                pass_ready_ms = ready_sum * 1000 / ready_n if ready_n else None
                # The peer: fetch the one new commit and list what it changed.
                t0 = time.perf_counter()
                subprocess.run(["git", "-C", peer_repo, "fetch", "-q", "origin", "+main:main"], check=True, env=GIT_ENV,
                               stdout=subprocess.DEVNULL)
                subprocess.run(["git", "-C", peer_repo, "diff-tree", "-r", "--name-only", "main~1", "main"], check=True,
                               env=GIT_ENV, stdout=subprocess.DEVNULL)
                peer_s = time.perf_counter() - t0
                samples.append({"ready_ms": (ready_at - started) * 1000, "pass_ms": done["duration_ms"],
                                "pass_ready_ms": pass_ready_ms, "pass_ready_passes": ready_n,
                                "push_to_ready_s": ready_at - pushed, "peer_ms": peer_s * 1000, **delta})
                shown = "n/a" if pass_ready_ms is None else f"{pass_ready_ms:.0f} ms"
                log(f"S2 run {k + 1}: poll start → API shows {tag}: {samples[-1]['ready_ms']:.0f} ms "
                    f"(pass log {done['duration_ms']} ms, pass_ready metric {shown}), counters {delta}, "
                    f"peer {peer_s * 1000:.1f} ms")
                time.sleep(0.3)
            self.details["S2"] = samples
            ours = summary([s["ready_ms"] for s in samples])
            inner = summary([s["pass_ms"] for s in samples])
            peer = summary([s["peer_ms"] for s in samples])
            exact = all(s[c] == 1 for s in samples for c in ("parsed", "validated", "authorized", "rendered"))
            self.row("S2", "one-claim commit: commit visible → plan ready (from the poll that sees it to the "
                     "API serving the new version), min / median",
                     f"{ours['min']:.1f} / {ours['median']:.1f} ms",
                     f"git fetch + diff-tree: {peer['min']:.1f} / {peer['median']:.1f} ms",
                     f"{ours['median'] / peer['median']:.2f}×", "≤ 50 ms",
                     "met" if ours["median"] <= 50 else "MISSED")
            self.row("S2", "of which the pass up to its `pass done` log line (ref check → apply; "
                     "before the redb commit and the API view rebuild), min / median",
                     f"{inner['min']:.0f} / {inner['median']:.0f} ms", "", "", "", "")
            ready_ms = [s["pass_ready_ms"] for s in samples if s["pass_ready_ms"] is not None]
            if ready_ms:
                rm = summary(ready_ms)
                self.row("S2", "cross-check: `converge_pass_ready_seconds` (pass start → state committed and "
                         "view swapped, the daemon's own clock; mean per push), min / median",
                         f"{rm['min']:.1f} / {rm['median']:.1f} ms", "", "", "", "")
            counts = [f"{s['parsed']:.0f}/{s['validated']:.0f}/{s['authorized']:.0f}/{s['rendered']:.0f}"
                      for s in samples]
            self.row("S2", "claims parsed / validated / authorized / rendered, per commit in push order "
                     "(the first is the first pass with a change after the daemon's start)",
                     ", ".join(counts), "", "", "exactly 1/1/1/1", "met" if exact else "MISSED")

            # S3: idle polls of the unchanged repository. An idle poll runs no
            # pass; polls are counted by `converge_source_polls_total` and the
            # git work by `converge_git_*_total`, read only at both ends of the
            # window (no scrapes in between). A binary without those metrics
            # falls back to counting changes of the last-success timestamp,
            # sampled every 0.4 s, with the scrapes' CPU measured and subtracted.
            log(f"S3: {a.idle}s of idle 1 s polls")
            time.sleep(1.5)
            key = 'converge_source_last_success_timestamp_seconds{source="envs"}'
            polls_key = 'converge_source_polls_total{source="envs"}'
            git_keys = {w: f'converge_git_{w}_total{{source="envs"}}' for w in ("ref_checks", "fetches", "blob_reads")}
            counted = polls_key in d.metrics()
            scrape_cpu = 0.0
            if not counted:
                c0 = d.cpu_seconds()
                for _ in range(100):
                    d.metrics()
                scrape_cpu = (d.cpu_seconds() - c0) / 100
            m0, c0, t0 = d.metrics(), d.cpu_seconds(), time.perf_counter()
            seen, scrapes = {m0.get(key)}, 1
            if counted:
                time.sleep(a.idle)
            while not counted and time.perf_counter() - t0 < a.idle:
                time.sleep(0.4)
                seen.add(d.metrics().get(key))
                scrapes += 1
            c1, t1 = d.cpu_seconds(), time.perf_counter()
            m1 = d.metrics()
            scrapes += 1
            seen.add(m1.get(key))
            if counted:
                polls = int(m1[polls_key] - m0[polls_key])
                work = {w: m1.get(k, 0) - m0.get(k, 0) for w, k in git_keys.items()}
                cpu = max(0.0, c1 - c0)
            else:
                polls = len(seen) - 1
                work = None
                cpu = max(0.0, c1 - c0 - scrapes * scrape_cpu)
            passes = m1["converge_passes_total"] - m0["converge_passes_total"]
            parsed = m1["converge_claims_parsed_total"] - m0["converge_claims_parsed_total"]
            # The peer: a no-op `git fetch` of the unchanged repository.
            peer_cpu = []
            for _ in range(a.runs):
                r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
                subprocess.run(["git", "-C", peer_repo, "fetch", "-q", "origin", "+main:main"], env=GIT_ENV,
                               check=True)
                r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
                peer_cpu.append((r1.ru_utime + r1.ru_stime - r0.ru_utime - r0.ru_stime) * 1000)
            ps = summary(peer_cpu)
            per_poll = cpu * 1000 / max(polls, 1)
            self.details["S3"] = {"seconds": t1 - t0, "polls": polls, "passes": passes, "cpu_s": cpu,
                                  "cpu_ms_per_poll": per_poll, "scrapes": scrapes, "polls_counted": counted,
                                  "scrape_cpu_ms": scrape_cpu * 1000, "parsed": parsed, "git_work": work,
                                  "peer_cpu_ms": peer_cpu, "rss_kib": d.status("VmRSS")}
            self.row("S3", f"idle git poll, {a.n // 1000}k claims: daemon CPU per poll ({polls} polls and "
                     f"{passes:.0f} passes in {t1 - t0:.0f} s; daemon CPU in 10 ms ticks)",
                     f"{per_poll:.1f} ms",
                     f"no-op git fetch: {ps['median']:.1f} ms CPU", f"{per_poll / ps['median']:.2f}×", "≤ 2 ms CPU",
                     "met" if per_poll <= 2 else "MISSED")
            if work is not None:
                per = {w: v / max(polls, 1) for w, v in work.items()}
                self.row("S3", "idle git poll: git blob reads / fetches / ref checks per poll "
                         "(`converge_git_*_total`), claims parsed in the window",
                         f"{per['blob_reads']:.2f} / {per['fetches']:.2f} / {per['ref_checks']:.2f}; "
                         f"{parsed:.0f} parsed", "", "", "0 blob reads",
                         "met" if work["blob_reads"] == 0 and parsed == 0 else "MISSED")
            else:
                self.row("S3", "idle git poll: claims parsed (blob reads are not exposed by this build)",
                         f"{parsed:.0f}", "", "", "0 blob reads", "met (0 parsed)" if parsed == 0 else "MISSED")
        finally:
            d.stop()
        return run, repo, pusher

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

    # -- S4 polling (git source, 10 s) -------------------------------------
    def s4_polling(self, run, repo, pusher):
        a = self.a
        log(f"S4: push → applied, git source polled every 10 s, {a.pushes} pushes")
        cfg = write_config(os.path.join(run, "c10.yaml"), [self.git_source("envs.git", "10s")], run, self.tags)
        # The same state and target as S2: a warm restart, nothing to re-apply.
        d = Daemon(self.bin, cfg, os.path.join(run, "daemon10.log"))
        try:
            d.wait_ready()
            time.sleep(1)
            paths = {os.path.basename(p): p for p in subprocess.run(
                ["git", "-C", pusher, "ls-tree", "-r", "--name-only", "main"], capture_output=True, text=True,
                check=True, env=GIT_ENV).stdout.split()}
            names = mutable_claims(os.path.join(self.w, "claims-yaml"), a.pushes, a.seed + 4)
            rng = random.Random(a.seed + 4)
            lat = []
            for k, name in enumerate(names):
                time.sleep(rng.uniform(0, 10))  # a random phase against the poll timer
                with open(os.path.join(self.w, "claims-yaml", name)) as f:
                    text, service, tag = mutate(f.read(), 100 + k)
                fast_import_commit(pusher, paths[name], text, f"bench: {name} {service} {tag}")
                env = name.rsplit(".", 1)[0]
                target = os.path.join(run, "out", env, f"deployment-{service}.yaml")
                subprocess.run(["git", "-C", pusher, "push", "-q", repo, "main"], check=True, env=GIT_ENV)
                t0 = time.perf_counter()
                lat.append(wait_for_text(target, tag, 30) - t0)
                log(f"S4 push {k + 1}/{len(names)}: applied after {lat[-1]:.2f} s")
            self.details["S4-poll"] = lat
            p50, p99 = pct(lat, 50), pct(lat, 99)
            self.row("S4", f"push → applied, git polled every 10 s ({len(lat)} pushes): p50 / p99 (max)",
                     f"{p50:.2f} / {p99:.2f} s", "Argo CD default poll 180 s, Flux 60 s (published)",
                     "", "p50 ≤ 5.2 s, p99 ≤ 10.5 s",
                     "met" if p50 <= 5.2 and p99 <= 10.5 else "MISSED")
        finally:
            d.stop()

    # -- S4 triggered, S5, S6 (daemon on a dir source) ---------------------
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

    # -- S8: the Kubernetes target against a real API server -----------------
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

    def s8(self):
        a = self.a
        n, runs = a.s8_envs, a.s8_runs
        for tool in ("etcd", "kube-apiserver", "kube-controller-manager", "kubectl"):
            if not os.path.isfile(os.path.join(kube_tools_bin(), tool)):
                self.row("S8", "Kubernetes apply", f"not measured: {tool} missing in {kube_tools_bin()} "
                         "(scripts/tools builds it; bench/run calls it)", "", "", "", "n/a")
                return
        log(f"S8: Kubernetes apply of {n} environments, {runs} rounds; a fresh API server per peer and round")
        run = fresh_dir(os.path.join(self.run, "s8"))
        claims = os.path.join(run, "claims")
        os.makedirs(claims)
        files = sorted(os.listdir(os.path.join(self.w, "claims-yaml")))[:n]
        if len(files) < n:
            raise RuntimeError(f"S8 needs {n} claims; the workload has {len(files)} (raise --n)")
        for f in files:
            shutil.copyfile(os.path.join(self.w, "claims-yaml", f), os.path.join(claims, f))
        # The rendered manifests, once: converge's manifests target into a directory.
        rcfg = write_config(os.path.join(run, "render.yaml"), [{"name": "bench", "kind": "dir", "path": claims}],
                            os.path.join(run, "render"), self.tags)
        subprocess.run([self.bin, "run", "--once", "--config", rcfg], check=True, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL)
        objects = load_manifests(os.path.join(run, "render", "out"))
        expected = {}
        for o in objects:
            expected[o["kind"]] = expected.get(o["kind"], 0) + 1
        total = len(objects)
        # kubectl's input: the same files (no .converge-inventory.json), Namespaces first:
        # kubectl applies files in path order and a namespaced object needs its Namespace.
        kin = os.path.join(run, "kubectl-input")
        for o in objects:
            sub = "0-namespaces" if o["kind"] == "Namespace" else os.path.join("1-objects", o["env"])
            os.makedirs(os.path.join(kin, sub), exist_ok=True)
            os.link(o["file"], os.path.join(kin, sub, os.path.basename(o["file"])))
        log(f"S8: {n} environments render to {total} objects ({', '.join(f'{k} {v}' for k, v in sorted(expected.items()))})")
        changes = mutable_claims(claims, runs * (1 + a.s8_saves), a.seed + 8)
        if len(changes) < runs * (1 + a.s8_saves):
            raise RuntimeError("S8: not enough claims with an exact service version to change")
        res = {"floor": [], "kubectl": [], "converge": []}
        peers = list(res)
        for i in range(runs):
            for peer in peers[i % 3:] + peers[:i % 3]:  # rotated, so drift hits everyone alike
                cluster = KubeCluster(os.path.join(run, f"kube-{peer}-{i}"))
                try:
                    kube_paths(cluster, objects)
                    time.sleep(1)  # let the controller manager's start-up requests pass
                    if peer == "floor":
                        r = self.s8_floor(cluster, objects, expected)
                    elif peer == "kubectl":
                        r = self.s8_kubectl(cluster, kin, objects, expected)
                    else:
                        mine = changes[i * (1 + a.s8_saves):(i + 1) * (1 + a.s8_saves)]
                        r = self.s8_converge(cluster, claims, os.path.join(run, f"converge-{i}"), objects,
                                             expected, mine)
                    r["cluster_ready_s"] = cluster.ready_s
                    res[peer].append(r)
                finally:
                    cluster.stop()
                    if not a.keep:
                        shutil.rmtree(cluster.dir, ignore_errors=True)
            log(f"S8 round {i + 1}/{runs}: cold floor {res['floor'][-1]['cold_s']:.2f} s, kubectl "
                f"{res['kubectl'][-1]['cold']['wall']:.2f} s, converge {res['converge'][-1]['cold']['wall']:.2f} s")
        diag = None
        if a.s8_diagnose:
            # Diagnosis: the same cold apply with 4× the concurrency (converge applies
            # concurrency/4 environments at once, each with 4 requests in flight).
            c = a.s8_concurrency * 4
            cluster = KubeCluster(os.path.join(run, "kube-diagnose"))
            try:
                time.sleep(1)
                cdir = fresh_dir(os.path.join(run, "converge-diagnose"))
                cfg = kube_config(os.path.join(cdir, "c.yaml"), claims, cdir, cluster.kubeconfig, self.tags, c)
                m0 = cluster.requests()
                cold = timed([self.bin, "run", "--once", "--config", cfg])
                m1 = cluster.requests()
                diag = {"concurrency": c, "cold": cold, "in_flight": in_flight(m0, m1, cold["wall"]),
                        "requests": request_delta(m0, m1)}
                log(f"S8 diagnosis: converge at concurrency {c}: cold {cold['wall']:.2f} s "
                    f"({total / cold['wall']:.0f} objects/s), {diag['in_flight']:.1f} in flight")
            finally:
                cluster.stop()
                if not a.keep:
                    shutil.rmtree(cluster.dir, ignore_errors=True)
        self.details["S8"] = {"environments": n, "objects": total, "kinds": expected, "rounds": res,
                              "diagnosis": diag}
        self.s8_rows(n, total, res, diag)

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

    def s8_floor(self, cluster, objects, expected):
        m0 = cluster.requests()
        k0 = cluster.cpu_seconds()
        cold_s, cpu_s, errors = floor_apply(cluster, objects, self.a.s8_concurrency)
        k1 = cluster.cpu_seconds()
        m1 = cluster.requests()
        if errors:
            raise RuntimeError(f"S8 floor: {len(errors)} failed requests, e.g. {errors[:3]}")
        counts = count_applied(cluster, objects)
        if counts != expected:
            raise RuntimeError(f"S8 floor applied {counts}, expected {expected}")
        m2 = cluster.requests()
        again_s, again_cpu, errors = floor_apply(cluster, objects, self.a.s8_concurrency)
        m3 = cluster.requests()
        log(f"S8 floor: cold {cold_s:.2f} s ({len(objects) / cold_s:.0f} objects/s, client CPU {cpu_s:.1f} s), "
            f"again {again_s:.2f} s")
        return {"cold_s": cold_s, "client_cpu_s": cpu_s, "server_cpu_s": k1 - k0,
                "in_flight": in_flight(m0, m1, cold_s),
                "cold_requests": request_delta(m0, m1), "again_s": again_s, "again_requests": request_delta(m2, m3)}

    def s8_kubectl(self, cluster, kin, objects, expected):
        env = {k: v for k, v in os.environ.items() if k != "KUBECONFIG"}
        env["KUBECACHEDIR"] = os.path.join(cluster.dir, "kubectl-cache")
        cmd = [os.path.join(kube_tools_bin(), "kubectl"), "--kubeconfig", cluster.kubeconfig,
               "apply", "--server-side", "-R", "-f", kin]
        m0 = cluster.requests()
        k0 = cluster.cpu_seconds()
        cold = timed(cmd, env=env)
        k1 = cluster.cpu_seconds()
        m1 = cluster.requests()
        counts = count_applied(cluster, objects)
        if counts != expected:
            raise RuntimeError(f"S8 kubectl applied {counts}, expected {expected}")
        m2 = cluster.requests()
        again = timed(cmd, env=env)
        m3 = cluster.requests()
        log(f"S8 kubectl: cold {cold['wall']:.2f} s ({len(objects) / cold['wall']:.0f} objects/s), "
            f"again {again['wall']:.2f} s")
        return {"cold": cold, "server_cpu_s": k1 - k0, "cold_requests": request_delta(m0, m1),
                "in_flight": in_flight(m0, m1, cold["wall"]),
                "again": again, "again_requests": request_delta(m2, m3)}

    def s8_converge(self, cluster, claims_src, run, objects, expected, changes):
        a = self.a
        run = fresh_dir(run)
        claims = os.path.join(run, "claims")
        shutil.copytree(claims_src, claims)
        cfg = kube_config(os.path.join(run, "c.yaml"), claims, run, cluster.kubeconfig, self.tags,
                          a.s8_concurrency)
        once = [self.bin, "run", "--once", "--config", cfg]
        out = {}
        # 1. cold apply
        m0 = cluster.requests()
        k0 = cluster.cpu_seconds()
        out["cold"] = timed(once)
        k1 = cluster.cpu_seconds()
        m1 = cluster.requests()
        out["server_cpu_s"] = k1 - k0
        out["cold_requests"] = request_delta(m0, m1)
        out["in_flight"] = in_flight(m0, m1, out["cold"]["wall"])
        counts = count_applied(cluster, objects, skip_namespace="converge-system")
        if counts != expected:
            raise RuntimeError(f"S8 converge applied {counts}, expected {expected}")
        # 2. unchanged re-apply
        m2 = cluster.requests()
        out["again"] = timed(once)
        m3 = cluster.requests()
        out["again_requests"] = request_delta(m2, m3)
        # 3. one claim's version changed, run --once: until the Deployment's image is on the server
        name = changes[0]
        env = name.rsplit(".", 1)[0]
        with open(os.path.join(claims, name)) as f:
            text, service, tag = mutate(f.read(), 800)
        w = DeploymentWatch(cluster, env, service, tag)
        try:
            tmp = os.path.join(run, name)
            with open(tmp, "w") as f:
                f.write(text)
            os.replace(tmp, os.path.join(claims, name))
            m4 = cluster.requests()
            t0 = time.perf_counter()
            r = timed(once)
            at = w.wait(60)
            m5 = cluster.requests()
        finally:
            w.close()
        out["change"] = {"ms": (at - t0) * 1000, "run": r, "requests": request_delta(m4, m5)}
        log(f"S8 converge: cold {out['cold']['wall']:.2f} s ({len(objects) / out['cold']['wall']:.0f} objects/s, "
            f"{shown_verbs(out['cold_requests'])}), again {out['again']['wall']:.2f} s "
            f"({shown_verbs(out['again_requests'])}), one claim: Deployment updated after "
            f"{out['change']['ms']:.0f} ms (run --once {r['wall'] * 1000:.0f} ms)")
        # 4. the daemon: idle passes, then one-claim saves into its watched directory
        logfile = os.path.join(run, "daemon.log")
        d = Daemon(self.bin, cfg, logfile)
        try:
            out["daemon_ready_s"] = d.wait_ready()

            def passes_done():
                with open(logfile, "rb") as f:
                    return [json.loads(line) for line in f if b'"pass done"' in line]

            def next_pass(count, timeout=30):
                """Waits (reading the log, not the daemon) until more than `count` passes are done."""
                deadline = time.time() + timeout
                while time.time() < deadline:
                    done = passes_done()
                    if len(done) > count:
                        return done
                    time.sleep(0.01)
                return None

            time.sleep(2)
            start = next_pass(len(passes_done()), timeout=a.s8_idle + 5)
            if start is None:  # no pass runs by itself: the idle window is just time
                r0, c0, k0, t0 = cluster.requests(), d.cpu_seconds(), cluster.cpu_seconds(), time.perf_counter()
                time.sleep(a.s8_idle)
                end = []
            else:
                r0, c0, k0, t0 = cluster.requests(), d.cpu_seconds(), cluster.cpu_seconds(), time.perf_counter()
                time.sleep(a.s8_idle)
                end = next_pass(len(passes_done()), timeout=30) or passes_done()
            c1, k1, t1 = d.cpu_seconds(), cluster.cpu_seconds(), time.perf_counter()
            r1 = cluster.requests()
            window = end[len(start):] if start else []
            out["idle"] = {"seconds": t1 - t0, "passes": len(window), "cpu_s": c1 - c0, "server_cpu_s": k1 - k0,
                           "requests": request_delta(r0, r1),
                           "pass_ms": [p.get("fields", {}).get("duration_ms") for p in window],
                           "pass_fields": window[-1].get("fields", {}) if window else None,
                           "rss_kib": d.status("VmRSS")}
            log(f"S8 idle: {len(window)} passes in {t1 - t0:.1f} s, daemon CPU {c1 - c0:.2f} s, "
                f"API requests {shown_verbs(out['idle']['requests'])}")
            saves = []
            stage = os.path.join(run, "stage")
            os.makedirs(stage)
            for k, name in enumerate(changes[1:]):
                env = name.rsplit(".", 1)[0]
                with open(os.path.join(claims, name)) as f:
                    text, service, tag = mutate(f.read(), 900 + k)
                w = DeploymentWatch(cluster, env, service, tag)
                try:
                    tmp = os.path.join(stage, name)
                    with open(tmp, "w") as f:
                        f.write(text)
                    t0 = time.perf_counter()
                    os.replace(tmp, os.path.join(claims, name))  # an editor's atomic save
                    saves.append((w.wait(60) - t0) * 1000)
                finally:
                    w.close()
                log(f"S8 daemon: claim saved → Deployment updated on the server after {saves[-1]:.0f} ms")
                time.sleep(0.5)
            out["saves_ms"] = saves
            out["daemon_hwm_kib"] = d.status("VmHWM")
        finally:
            d.stop()
        if not a.keep:
            shutil.rmtree(run, ignore_errors=True)
        return out

    def s8_rows(self, n, total, res, diag=None):
        fl, kc, cv = res["floor"], res["kubectl"], res["converge"]
        fw = summary([r["cold_s"] for r in fl])
        kw = summary([r["cold"]["wall"] for r in kc])
        cw = summary([r["cold"]["wall"] for r in cv])
        what = f"{n} environments = {total} objects"
        ratio_floor = fw["median"] / cw["median"]  # throughput ratio = inverse time ratio
        ratio_kubectl = kw["median"] / cw["median"]
        self.row("S8", f"cold apply, {what}: `converge run --once` wall min / median (objects/s at the median)",
                 f"{cw['min']:.2f} / {cw['median']:.2f} s ({total / cw['median']:.0f}/s)",
                 f"floor (Python, {self.a.s8_concurrency} in flight): {fw['min']:.2f} / {fw['median']:.2f} s "
                 f"({total / fw['median']:.0f}/s)",
                 f"{ratio_floor:.2f}× the floor's throughput", "≥ 0.8× the floor",
                 "met" if ratio_floor >= 0.8 else "MISSED")
        self.row("S8", f"cold apply, {what}: vs `kubectl apply --server-side -R -f` of the same rendered manifests",
                 f"{total / cw['median']:.0f} objects/s",
                 f"kubectl: {kw['min']:.2f} / {kw['median']:.2f} s ({total / kw['median']:.0f}/s)",
                 f"{ratio_kubectl:.2f}× kubectl's throughput", "ahead of kubectl (≥ 1.3× implied)",
                 "met" if ratio_kubectl >= 1.3 else ("ahead, < 1.3×" if ratio_kubectl > 1 else "MISSED"))
        med = lambda rs, f: statistics.median([f(r) for r in rs])  # noqa: E731
        self.row("S8", "cold apply: API requests by verb (apiserver_request_total, first round; the controller "
                 "manager's few requests included)", shown_verbs(cv[0]["cold_requests"]),
                 f"floor: {shown_verbs(fl[0]['cold_requests'])}; kubectl: {shown_verbs(kc[0]['cold_requests'])}")
        self.row("S8", "cold apply: CPU, median (converge user+sys; API server + etcd + controller manager)",
                 f"{med(cv, lambda r: r['cold']['user'] + r['cold']['sys']):.2f} s; server "
                 f"{med(cv, lambda r: r['server_cpu_s']):.1f} s",
                 f"floor client {med(fl, lambda r: r['client_cpu_s']):.2f} s, server "
                 f"{med(fl, lambda r: r['server_cpu_s']):.1f} s; kubectl "
                 f"{med(kc, lambda r: r['cold']['user'] + r['cold']['sys']):.2f} s, server "
                 f"{med(kc, lambda r: r['server_cpu_s']):.1f} s")
        self.row("S8", "cold apply: requests in flight on average (Little's law: Σ server-side request time "
                 "÷ wall), median", f"{med(cv, lambda r: r['in_flight']):.1f}",
                 f"floor {med(fl, lambda r: r['in_flight']):.1f}; kubectl {med(kc, lambda r: r['in_flight']):.1f}")
        if diag:
            fm = statistics.median([r["cold_s"] for r in fl])
            self.row("S8", f"diagnosis (one run, not a target): converge cold apply at concurrency "
                     f"{diag['concurrency']} ({diag['concurrency'] // 4} environments at once × 4 requests)",
                     f"{diag['cold']['wall']:.2f} s ({total / diag['cold']['wall']:.0f} objects/s), "
                     f"{diag['in_flight']:.1f} in flight", f"floor at {self.a.s8_concurrency}: {total / fm:.0f} objects/s",
                     f"{fm / diag['cold']['wall']:.2f}× the floor's throughput")
        rss = max(r["cold"]["rss_kib"] for r in cv) / 1024
        self.row("S8", "cold apply: peak RSS (GNU time)", f"{rss:.0f} MiB",
                 f"kubectl {max(r['cold']['rss_kib'] for r in kc) / 1024:.0f} MiB")
        ca = summary([r["again"]["wall"] for r in cv])
        ka = summary([r["again"]["wall"] for r in kc])
        fa = summary([r["again_s"] for r in fl])
        wr = [writes_and_object_reads(r["again_requests"]) for r in cv]
        ok = all(w == 0 and g == 0 for w, g in wr)
        self.row("S8", "unchanged re-apply: wall min / median", f"{ca['min']:.2f} / {ca['median']:.2f} s",
                 f"kubectl {ka['min']:.2f} / {ka['median']:.2f} s; floor re-sending {fa['median']:.2f} s",
                 f"{ca['median'] / ka['median']:.2f}× kubectl's time")
        self.row("S8", "unchanged re-apply: API requests by verb (first round); writes / object GETs in every round",
                 f"{shown_verbs(cv[0]['again_requests'])}; " + ", ".join(f"{w} / {g}" for w, g in wr),
                 f"kubectl: {shown_verbs(kc[0]['again_requests'])}", "", "0 writes, no per-object reads",
                 "met" if ok else "MISSED")
        ch = summary([r["change"]["ms"] for r in cv])
        chr_ = summary([r["change"]["run"]["wall"] * 1000 for r in cv])
        self.row("S8", f"one-claim change, `run --once` at {n} environments: start → Deployment image updated on "
                 "the server (watch event), min / median",
                 f"{ch['min']:.0f} / {ch['median']:.0f} ms", f"(the whole run --once: {chr_['median']:.0f} ms)", "",
                 "≤ 250 ms", "met" if ch["median"] <= 250 else "MISSED")
        self.row("S8", "one-claim change: API requests by verb (first round)", shown_verbs(cv[0]["change"]["requests"]))
        saves = [s for r in cv for s in r["saves_ms"]]
        if saves:
            self.row("S8", f"one-claim change, daemon watching the claims dir: save → Deployment image updated on "
                     f"the server ({len(saves)} saves): p50 / max",
                     f"{pct(saves, 50):.0f} / {max(saves):.0f} ms", "", "", "≤ 250 ms",
                     "met" if max(saves) <= 250 else ("p50 met, max over" if pct(saves, 50) <= 250 else "MISSED"))
        idle = [r["idle"] for r in cv]
        passes = sum(i["passes"] for i in idle)
        if passes:
            per = {}
            for i in idle:
                for k, v in i["requests"].items():
                    per[k] = per.get(k, 0) + v
            w, g = writes_and_object_reads(per)
            cpu = sum(i["cpu_s"] for i in idle) * 1000 / passes
            scpu = sum(i["server_cpu_s"] for i in idle) * 1000 / passes
            dur = [p for i in idle for p in i["pass_ms"] if p is not None]
            self.row("S8", f"idle passes of the daemon at {n} environments ({passes} passes in "
                     f"{sum(i['seconds'] for i in idle):.0f} s, no input changed; on this cluster Deployments "
                     "never roll out): API requests per pass by verb",
                     shown_verbs(per, per=passes), "", "",
                     "0 writes, no per-object reads", "met" if w == 0 and g == 0 else "MISSED")
            self.row("S8", "idle pass: daemon CPU per pass (10 ms ticks); API server + etcd + controller manager CPU "
                     "over the window ÷ passes (their own background included); pass duration median",
                     f"{cpu:.1f} ms; server {scpu:.1f} ms; {statistics.median(dur) if dur else float('nan'):.0f} ms")
        else:
            per = {}
            for i in idle:
                for k, v in i["requests"].items():
                    per[k] = per.get(k, 0) + v
            self.row("S8", f"idle daemon at {n} environments ({sum(i['seconds'] for i in idle):.0f} s)",
                     f"no pass ran; API requests in the window: {shown_verbs(per)}", "", "",
                     "0 writes, no per-object reads", "met" if writes_and_object_reads(per) == (0, 0) else "MISSED")
        hwm = max(r["daemon_hwm_kib"] for r in cv) / 1024
        self.row("S8", f"daemon peak RSS (VmHWM) at {n} environments; API server ready in (median)",
                 f"{hwm:.0f} MiB", f"{statistics.median([r['cluster_ready_s'] for rs in res.values() for r in rs]):.1f} s")
        self.row("S8", "drift sweep: API calls and CPU",
                 "not measured: S8 has no drift step yet (drift detection was not built in the commit S8 was "
                 "written against)", "", "", "reported", "n/a")


    # -- report -----------------------------------------------------------
    def versions(self):
        garage = garage_binary(self.a.garage)
        def out(cmd):
            try:
                p = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
                return (p.stdout + p.stderr).strip().splitlines()[0]
            except Exception as e:  # noqa: BLE001
                return f"unavailable ({e})"
        ajv_pkg = os.path.join(os.path.dirname(os.path.dirname(os.path.realpath(self.a.ajv))), "package.json")
        try:
            ajv_version = "ajv-cli " + json.load(open(ajv_pkg))["version"]
        except Exception:  # noqa: BLE001
            ajv_version = "ajv-cli (version unknown)"
        return {
            "converge": out([self.bin, "--version"]) + f" (commit {self.commit})",
            "rustc": out(["rustc", "--version"]),
            "ajv": ajv_version + ", " + out(["node", "--version"]).replace("v", "node ", 1),
            "cedar": out([self.a.cedar, "--version"]),
            "git": out(["git", "--version"]),
            "nginx": out([self.a.nginx, "-v"]),
            "wrk": out([self.a.wrk, "--version"]).split(" [")[0],
            "garage": out([garage, "--version"]).split(" [")[0] if garage else "not installed",
            "kubernetes (S8)": kube_versions(),
        }

    def machine(self):
        cpu = "unknown"
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
        with open("/proc/meminfo") as f:
            mem = int(f.readline().split()[1]) // 1024
        return f"{platform.system()} {platform.release()}, {os.cpu_count()} × {cpu}, {mem} MiB RAM"

    def report(self, started, load_before, load_after, elapsed):
        header = ["scenario", "metric", "converge", "peer (same run)", "ratio", "target", "verdict"]
        widths = [max(len(str(r[i])) for r in self.rows + [header]) for i in range(7)]
        widths = [min(w, 70) for w in widths]
        print()
        print("  ".join(h.ljust(w) for h, w in zip(header, widths)))
        for r in self.rows:
            print("  ".join(str(c).ljust(w) for c, w in zip(r, widths)))
        print()
        meta = {
            "date": started.strftime("%Y-%m-%d %H:%M UTC"), "minutes": round(elapsed / 60, 1),
            "machine": self.machine(), "load_before": load_before, "load_after": load_after,
            "n": self.a.n, "seed": self.a.seed, "runs": self.a.runs, "versions": self.versions(),
        }
        doc = {"meta": meta, "rows": self.rows, "notes": self.notes + STANDING_NOTES, "details": self.details}
        json_path = os.path.splitext(self.a.results)[0] + ".json"
        os.makedirs(os.path.dirname(os.path.abspath(json_path)), exist_ok=True)
        if self.a.merge and os.path.exists(json_path):
            asked = {x.strip().upper() for x in self.a.only.split(",") if x.strip()}
            doc = merged(json_path, doc, self.rows, self.notes, asked)
        with open(json_path, "w") as f:
            json.dump(doc, f, indent=1, default=str)
        render(doc, self.a.results)


def metric_key(row):
    """A row's identity across runs: its scenario and its metric's words before any detail."""
    return row[0], row[1].split(" (")[0].split(":")[0]


def merged(json_path, doc, rows, notes, asked):
    """The saved run with the scenarios measured now (`asked`, --only) replacing its rows of
    them (--merge): the other rows, notes and figures stay as they were, and meta["merged"]
    says which rows came from this later run and under what conditions. A scenario that
    measures a row of another (S7 times S1's secrets variant) replaces only that row."""
    with open(json_path) as f:
        old = json.load(f)
    ran = {r[0] for r in rows} & asked
    extra = {metric_key(r) for r in rows if r[0] not in ran}
    order = lambda r: int(re.sub(r"\D", "", r[0]) or 0)  # noqa: E731
    kept = [r for r in old["rows"] if r[0] not in ran and metric_key(r) not in extra]
    out_rows = sorted(kept + [list(r) for r in rows], key=order)  # stable: each scenario's own order
    # The old run's own notes (not standing ones) about scenarios not run now, then the standing ones.
    # (An old standing note whose text changed since has a current one with the same opening.)
    out_notes = [n for n in old["notes"] if n not in STANDING_NOTES and not any(n.startswith(s) for s in ran)
                 and not any(n[:25] == m[:25] for m in STANDING_NOTES)]
    out_notes += [n for n in notes if n not in STANDING_NOTES] + list(STANDING_NOTES)
    meta = dict(old["meta"])
    meta["merged"] = [m for m in meta.get("merged", []) if not set(m["scenarios"]) & ran] + [{
        "scenarios": sorted(ran, key=lambda s: int(re.sub(r"\D", "", s) or 0)),
        "date": doc["meta"]["date"], "minutes": doc["meta"]["minutes"],
        "load_before": doc["meta"]["load_before"], "load_after": doc["meta"]["load_after"],
        "converge": doc["meta"]["versions"]["converge"], "runs": doc["meta"]["runs"],
        "kubernetes": doc["meta"]["versions"].get("kubernetes (S8)")}]
    details = dict(old["details"])
    details.update(doc["details"])
    return {"meta": meta, "rows": out_rows, "notes": out_notes, "details": details}


def render(doc, path):
    """RESULTS.md from the saved run (bench/RESULTS.json) and bench/ANALYSIS.md."""
    meta = doc["meta"]
    header = ["scenario", "metric", "converge", "peer (same run)", "ratio", "target", "verdict"]
    md = [
        "# Benchmark results",
        "",
        "Written by `bench/run` (do not edit by hand: the analysis lives in "
        "[`ANALYSIS.md`](ANALYSIS.md) and is appended below; the raw figures are in "
        "[`RESULTS.json`](RESULTS.json)). Scenarios, peers and targets: `shared/PERFORMANCE.md`. "
        "Peers run in the same invocation, interleaved with converge; ratios are converge ÷ peer "
        "(lower is better for times, higher for throughput).",
        "",
        f"- date: {meta['date']}, total {meta['minutes']} min",
        f"- machine: {meta['machine']}",
        f"- load average (1/5/15 min) before: {' '.join(meta['load_before'])}, "
        f"after: {' '.join(meta['load_after'])}",
        f"- workload: {meta['n']} claims, seed {meta['seed']} (`bench/gen.py`), {meta['runs']} runs per "
        "figure unless stated (min and median), peak RSS from `/usr/bin/time -v`",
        "- versions: " + "; ".join(f"{k}: {val}" for k, val in meta["versions"].items()),
    ]
    for m in meta.get("merged", []):
        md.append(f"- {', '.join(m['scenarios'])}: measured later, on their own (`--only {','.join(m['scenarios'])} "
                  f"--merge`): {m['date']}, {m['minutes']} min, load average before {' '.join(m['load_before'])}, "
                  f"after {' '.join(m['load_after'])}; {m['converge']}"
                  + (f"; {m['kubernetes']}" if m.get("kubernetes") else "")
                  + "; their rows replace that scenario's rows of the run above, the rest is that run's")
    md += [
        "",
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
    ]
    for r in doc["rows"]:
        md.append("| " + " | ".join(str(c).replace("|", "\\|") for c in r) + " |")
    md += ["", "## How each figure is taken", ""]
    md += [f"- {n}" for n in doc["notes"]]
    analysis = os.path.join(HERE, "ANALYSIS.md")
    if os.path.exists(analysis):
        with open(analysis) as f:
            md += ["", f.read().rstrip()]
    with open(path, "w") as f:
        f.write("\n".join(md) + "\n")
    log(f"wrote {path}")


STANDING_NOTES = [
    "S1 `plan` is `converge plan` (text output, ~15 MB for 10k creates) on an empty target (every "
    "environment is a create); the JSON plan of the same run is checked once for correctness. "
    "`run --once` also writes the manifests (~34 files per environment here, synced in four `syncfs` "
    "barriers at this commit) into an emptied directory. The git variant is a cold `plan` with an empty state dir: mirror clone over "
    "`git daemon` on loopback, then every blob read.",
    "S1 peers: `ajv validate --spec=draft2020 -c ajv-formats` over the same files (schema only) plus "
    "`cedar run-tests` of the same 10k requests, each with its entity slice (user, pools, environment) "
    "and no schema (the cheapest way to run them through the CLI). The peer figure is ajv + cedar.",
    "S2: after a push, the API of the environment is polled every 2 ms until it serves the new version; "
    "t0 is the start of the pass that picked the commit up (its `pass done` log time minus its "
    "duration_ms), so the figure runs from the poll that sees the commit (ref check, fetch, tree diff, "
    "evaluation, plan, apply of the one environment, redb commit) to the rebuilt API view. The wait for "
    "the next 1 s poll is not included (that is S4). The counters are `converge_claims_*_total` deltas "
    "over the push; `converge_pass_ready_seconds` (sum / count deltas) is the daemon's own pass start → "
    "view swap, a cross-check of the same span (from the pass start, after the poll's ref check and fetch) on the "
    "daemon's clock. The peer fetches the same commit into a bare clone and lists it with `git diff-tree`.",
    "S3 divides the daemon's CPU time (utime + stime from /proc/PID/stat, 10 ms ticks) over the idle window "
    "by the number of polls, `converge_source_polls_total` read at both ends of the window (no scrapes in "
    "between; builds without it: changes of `converge_source_last_success_timestamp_seconds` sampled every "
    "0.4 s, the scrapes' CPU measured separately and subtracted). An idle poll runs no pass "
    "(`converge_passes_total` stays put). Git blob reads, fetches and ref checks per poll come from "
    "`converge_git_*_total`. The peer is a no-op `git fetch` (ref advertisement, nothing to fetch).",
    "S3 (bucket): the N JSON claims are PUT (SigV4, 16 at a time) into a bucket of a one-node Garage on "
    "loopback (sqlite metadata, started and provisioned as tests/it/support/garage.rs does); the daemon polls it through an "
    "`s3` source every 1 s (path-style, key files). After its first pass (`/ready`), the window starts just after "
    "a poll completes (`converge_source_polls_total` seen to move, scraped every 20 ms) and lasts `--idle` "
    "seconds; LIST and GET calls are `converge_s3_requests_total{op=\"list\"|\"get\"}` deltas (every attempt, "
    "retries included) divided by the polls, the counters read again just after the first poll that ends past "
    "the window, so every poll counted is whole. The target is exact: ⌈keys/1000⌉ LISTs per poll (ListObjectsV2 "
    "pages of 1,000 keys), no GET, no source error, no claim parsed. The CPU per poll is taken as for git (the "
    "daemon's utime + stime over the window, no scrape in between, ÷ the polls in it); PERFORMANCE.md sets no "
    "CPU target for it and there is no peer. Without a Garage binary ($GARAGE_BIN, PATH or "
    "~/.cache/converge-test-tools/bin, where bench/run and scripts/test install it) the row says so.",
    "S4 polling: pushes at random phases against the 10 s timer; latency is from `git push` returning "
    "to the environment's Deployment file on disk holding the new tag. Triggered: an atomic rename into "
    "the watched dir source to the same file check.",
    "S5: `wrk -t1 -c32 -d5s` on loopback against the daemon and against nginx (worker_processes auto, "
    "keepalive) serving the same body bytes from a file, alternated. \"During S1\" runs `converge plan` "
    "on the 10k JSON claims in a loop beside both servers.",
    "S6: steady VmRSS of daemons on a dir source: at 1k, three fresh daemons after their first pass, ten "
    "one-claim passes (a comment appended each time) and 3 s of rest; at 10k, the one fresh daemon (a cold "
    "start applies ~340k files, so it is started once) after S4-triggered's ten one-claim passes, S5's load "
    "and 3 s of rest. Slope = difference / 9,000. The RSS right after the first pass is reported too: "
    "mimalloc gives the cold start's memory back only gradually.",
    "S7: the 10k YAML claims with one secret each, encrypted in sops's format (a fresh data key per file, "
    "wrapped for one age recipient) by bench/sopsgen.py, since the sops CLI takes tens of ms a file; the "
    "peer, `sops --decrypt` per file (the real CLI, from scripts/tools), decrypts and MAC-checks a sample "
    "(--s7-peer files), which also proves the format. Cold decrypt cost = median plan wall with secrets "
    "minus the same claims without. The S1 row 'YAML + one SOPS secret' is that plan's wall. Warm: a daemon "
    "on 1k of the claims, X25519 unwraps counted by converge_secrets_key_unwraps_total before and after "
    "a one-claim pass (a comment appended: the file is decrypted again, its data key comes from the cache).",
    "S8: the first `--s8-envs` claims (default $S8_ENVS, else 200; the issue's figure is 1,000) are rendered "
    "once by converge's manifests target (`run --once` into a directory); those `.yaml` files (not "
    "the inventory file) are what kubectl and the floor send. Every peer, every round, gets a "
    "fresh etcd + kube-apiserver + kube-controller-manager (namespace and garbage-collector controllers) on "
    "loopback, started from scripts/tools' builds with the flags of tests/it/support/kube.rs (TLS, "
    "static admin token, RBAC), so no peer sees another's objects; the peers' order rotates per round. "
    "converge: `run --once` (release) with `target: {kind: kubernetes, concurrency: 8, inventory_namespace: "
    "converge-system}` and the admin kubeconfig. kubectl: `kubectl apply --server-side -R -f DIR` with a fresh "
    "discovery cache; DIR holds the Namespaces in a first subdirectory (kubectl applies files in path order "
    "and a namespaced object needs its Namespace). Floor: a Python client (http.client over TLS, one kept-alive "
    "connection per thread, 8 threads) sending each file's bytes as a server-side apply PATCH "
    "(application/apply-patch+yaml, fieldManager, force=true), Namespaces first, then everything else; the "
    "resource paths come from discovery before the clock starts. Every cold apply is checked afterwards "
    "(a LIST per kind: every object present with converge's labels). Throughput = objects ÷ wall. The "
    "requests are `apiserver_request_total` deltas by verb and resource (the scrape itself taken off; "
    "non-resource GETs such as discovery and /metrics are not object reads); the API server's own requests "
    "(its identity lease renewal, an IPAddress POSTed per Service created, events) are shown apart. \"In "
    "flight\" is Little's law: the `apiserver_request_duration_seconds` sum over the window ÷ the wall. "
    "The one-claim change edits a claim's exact service version; the time runs from just before `run --once` "
    "is started to the Deployment's new image arriving on a watch opened beforehand (so process start, "
    "reading the claims, the inventory LIST and the apply are all in it). The daemon (`converge run`, same "
    "config and cluster) then runs: this cluster has no kubelet and no deployment controller, so Deployments "
    "never roll out; a daemon that re-runs its pass while its environments are Reconciling (every 2 s at "
    "237dc36, until `health_timeout`) makes idle passes, counted from its `pass done` log lines (read from "
    "the file, so the window has no scrapes of the daemon), with its CPU (utime + stime) and the API "
    "requests over whole passes; a daemon that runs no pass without a change gets a window of "
    "`--s8-idle` seconds instead, and the row says no pass ran. Finally one-claim saves (atomic renames) into its watched claims "
    "directory, timed to the watch event. The diagnosis row is one extra cold apply at 4× the concurrency. "
    "The drift sweep is not measured yet: drift detection was not built in the commit S8 was written "
    "against (237dc36).",
]


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


def main():
    ap = argparse.ArgumentParser(description="converge benchmarks (S1-S8)")
    ap.add_argument("--bin", required=True, help="the converge binary (a release build)")
    ap.add_argument("--ajv", required=True)
    ap.add_argument("--cedar", required=True)
    ap.add_argument("--nginx", default="/usr/sbin/nginx")
    ap.add_argument("--wrk", default="wrk")
    ap.add_argument("--work", default=os.path.expanduser("~/.cache/converge-bench/work"),
                    help="where the generated workload is kept between runs")
    ap.add_argument("--n", type=int, default=10_000)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--pushes", type=int, default=10)
    ap.add_argument("--idle", type=int, default=20, help="seconds of idle polling for S3")
    ap.add_argument("--garage", default=None,
                    help="the Garage binary for S3 (bucket); default $GARAGE_BIN, PATH, then scripts/test's "
                         "~/.cache/converge-test-tools/bin/garage")
    ap.add_argument("--rss-runs", type=int, default=3, help="fresh 1k daemons for S6")
    ap.add_argument("--wrk-seconds", type=int, default=5)
    ap.add_argument("--only", default="S1,S2,S3,S4,S5,S6,S7,S8,S9")
    ap.add_argument("--s9-services", type=int, default=50)
    ap.add_argument("--s9-tags", type=int, default=200)
    ap.add_argument("--s9-interval", type=int, default=5, help="versions.interval of S9's daemon, seconds")
    ap.add_argument("--s9-scans", type=int, default=4, help="idle scans measured in S9")
    ap.add_argument("--s9-pushes", type=int, default=5, help="new tags pushed while S9's daemon runs")
    ap.add_argument("--s7-peer", type=int, default=100, help="files sops --decrypt decrypts for S7's peer")
    ap.add_argument("--s8-envs", type=int, default=int(os.environ.get("S8_ENVS", "200")),
                    help="environments applied in S8 (default $S8_ENVS, else 200; the issue's figure is 1,000)")
    ap.add_argument("--s8-runs", type=int, default=None,
                    help="S8 rounds (each starts a fresh API server per peer); default --runs")
    ap.add_argument("--s8-concurrency", type=int, default=8,
                    help="requests in flight: converge's target concurrency and the floor client's threads")
    ap.add_argument("--s8-idle", type=int, default=10, help="seconds of the S8 idle-pass window per round")
    ap.add_argument("--no-s8-diagnose", dest="s8_diagnose", action="store_false",
                    help="skip S8's one extra converge cold apply at 4× the concurrency")
    ap.add_argument("--s8-saves", type=int, default=2,
                    help="one-claim saves into the S8 daemon's watched directory per round")
    ap.add_argument("--s10-envs", type=int, default=int(os.environ.get("S10_ENVS", "3000")),
                    help="S10's environments shared by 3 shards (default $S10_ENVS, else 3,000)")
    ap.add_argument("--s10-failover-envs", type=int, default=50, help="S10 failover's environments")
    ap.add_argument("--s10-rounds", type=int, default=5, help="S10 failover's kill -9 rounds")
    ap.add_argument("--s10-settle", type=int, default=5, help="seconds between S10 failover rounds")
    ap.add_argument("--s10-timeout", type=int, default=1800, help="seconds S10's cold apply may take")
    ap.add_argument("--no-apply", dest="apply", action="store_false", help="skip run --once in S1")
    ap.add_argument("--apply-runs", type=int, default=2,
                    help="runs of the S1 apply (each writes ~340k files: 20-60 s here)")
    ap.add_argument("--results", default=os.path.join(HERE, "RESULTS.md"))
    ap.add_argument("--keep", action="store_true", help="keep the run directory")
    ap.add_argument("--merge", action="store_true",
                    help="replace only the rows of the scenarios run now in the saved RESULTS.json/RESULTS.md")
    ap.add_argument("--render-only", action="store_true",
                    help="rewrite RESULTS.md from RESULTS.json and ANALYSIS.md, measuring nothing")
    if "--render-only" in sys.argv[1:]:
        results = os.path.join(HERE, "RESULTS.md")
        with open(os.path.splitext(results)[0] + ".json") as f:
            render(json.load(f), results)
        return
    args = ap.parse_args()
    if args.s8_runs is None:
        args.s8_runs = args.runs
    only = set(args.only.upper().split(","))
    started = datetime.datetime.now(datetime.timezone.utc)
    t0 = time.time()
    load_before = loadavg()
    b = Bench(args)
    log(f"run directory {b.run}; load average {' '.join(load_before)}")
    try:
        if "S1" in only:
            b.s1()
        if only & {"S2", "S3", "S4"}:
            run, repo, pusher = b.s2_s3()
            if "S3" in only:
                b.s3_bucket()
            if "S4" in only:
                b.s4_polling(run, repo, pusher)
        if only & {"S4", "S5", "S6"}:
            b.s4_s5_s6()
        if "S7" in only:
            b.s7()
        if "S8" in only:
            b.s8()
        if "S9" in only:
            b.s9()
        if "S10" in only:
            b.s10()
    finally:
        if b.git:
            b.git.stop()
    load_after = loadavg()
    b.report(started, load_before, load_after, time.time() - t0)


if __name__ == "__main__":
    main()
