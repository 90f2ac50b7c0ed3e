"""A one-node Garage (S3) on loopback, provisioned as tests/it/support/garage.rs does, and
SigV4 signing for the uploads."""

import concurrent.futures
import datetime
import hashlib
import hmac
import http.client
import os
import shutil
import subprocess
import threading
import time
import urllib.parse
import urllib.request

from harness import ROOT, free_port, fresh_dir, spawn, stop, tail, wait_port


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
