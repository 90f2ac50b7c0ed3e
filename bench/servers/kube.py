"""etcd + kube-apiserver + kube-controller-manager on loopback (S8, S10), the API
server's request accounting, and the floor client that applies manifests directly."""

import concurrent.futures
import http.client
import json
import os
import re
import socket
import ssl
import subprocess
import threading
import time

from harness import CLK_TCK, LABEL, ROOT, _children, free_port, fresh_dir, http_get, spawn, tail


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
