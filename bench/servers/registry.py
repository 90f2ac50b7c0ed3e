"""The distribution registry (S9), and pushes of tags into it."""

import hashlib
import http.client
import json
import os
import subprocess
import threading

from harness import free_port, spawn, stop, wait_port


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
