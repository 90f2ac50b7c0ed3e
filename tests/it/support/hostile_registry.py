"""A hostile OCI registry for converge's registry client (test infrastructure).

Two servers: the registry converge is configured with (127.0.0.1, a free
port; TLS with --tls-cert/--tls-key) and a "foreign" one on another host
(--foreign-host, a free port) that the registry points converge at. Every
request either receives is appended to --log as one JSON line
({"server", "path", "authorization"}), so a test can tell whether a
credential went where it must not. Prints "ready PORT FOREIGN_PORT" once
both listen; stops on SIGTERM/SIGKILL (the test kills it on drop).

Modes (--mode):
- huge-token: a bearer challenge whose realm is the registry itself; the
  token answer says expires_in 18446744073709551615.
- foreign-realm: a bearer challenge whose realm is the foreign server over
  plain HTTP; the foreign server hands out tokens the registry accepts.
- redirect: basic auth; releases/billing's tag list answers 302 to the
  foreign server (which lists 9.9.9); releases/user-service's answers 307
  to another path of the registry itself.

Credentials: user ci, password s3cret.
"""

import argparse
import json
import ssl
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit, parse_qs

BASIC = "Basic Y2k6czNjcmV0"  # ci:s3cret
TOKEN = "hostile-token"
HUGE = 18446744073709551615


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--mode", required=True, choices=["huge-token", "foreign-realm", "redirect"])
    ap.add_argument("--log", required=True)
    ap.add_argument("--foreign-host", default="127.0.0.1")
    ap.add_argument("--tls-cert")
    ap.add_argument("--tls-key")
    args = ap.parse_args()
    lock = threading.Lock()

    def record(server, handler):
        entry = {
            "server": server,
            "path": handler.path,
            "authorization": handler.headers.get("Authorization"),
        }
        with lock, open(args.log, "a", encoding="utf-8") as f:
            f.write(json.dumps(entry) + "\n")

    class Base(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *_):
            pass

        def send(self, status, body=b"", headers=()):
            self.send_response(status)
            for k, v in headers:
                self.send_header(k, v)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def json(self, status, value, headers=()):
            body = json.dumps(value).encode()
            self.send(status, body, [("Content-Type", "application/json"), *headers])

        def unauthorized(self, challenge):
            self.json(401, {"errors": [{"code": "UNAUTHORIZED"}]},
                      [("WWW-Authenticate", challenge)])

    scheme = "https" if args.tls_cert else "http"
    registry = ThreadingHTTPServer(("127.0.0.1", 0), Base)
    foreign = ThreadingHTTPServer((args.foreign_host, 0), Base)
    port = registry.server_address[1]
    foreign_port = foreign.server_address[1]
    foreign_base = f"http://{args.foreign_host}:{foreign_port}"

    def repository(path):
        # /v2/<repository>/tags/list
        p = urlsplit(path).path
        if p.startswith("/v2/") and "/tags/" in p:
            return p[len("/v2/"):p.index("/tags/")]
        return None

    class Registry(Base):
        def do_GET(self):
            record("registry", self)
            auth = self.headers.get("Authorization")
            repo = repository(self.path)
            if args.mode == "huge-token":
                if self.path.startswith("/token"):
                    if auth == BASIC:
                        return self.json(200, {"token": TOKEN, "expires_in": HUGE})
                    return self.json(401, {"errors": [{"code": "UNAUTHORIZED"}]})
                if auth != f"Bearer {TOKEN}":
                    return self.unauthorized(
                        f'Bearer realm="{scheme}://127.0.0.1:{port}/token",'
                        f'service="hostile",scope="repository:{repo}:pull"')
                return self.json(200, {"name": repo, "tags": ["1.0.0", "1.2.0"]})
            if args.mode == "foreign-realm":
                if auth != f"Bearer {TOKEN}":
                    return self.unauthorized(
                        f'Bearer realm="{foreign_base}/token",'
                        f'service="hostile",scope="repository:{repo}:pull"')
                return self.json(200, {"name": repo, "tags": ["1.0.0", "1.2.0"]})
            # redirect
            if auth != BASIC:
                return self.unauthorized('Basic realm="hostile"')
            query = parse_qs(urlsplit(self.path).query)
            if repo == "releases/billing":
                return self.send(302, b"", [("Location", f"{foreign_base}{self.path}")])
            if repo == "releases/user-service" and "moved" not in query:
                return self.send(307, b"", [("Location", f"/v2/{repo}/tags/list?moved=1")])
            return self.json(200, {"name": repo, "tags": ["1.0.0", "1.2.0"]})

    class Foreign(Base):
        def do_GET(self):
            record("foreign", self)
            if self.path.startswith("/token"):
                return self.json(200, {"token": TOKEN, "expires_in": 300})
            repo = repository(self.path)
            return self.json(200, {"name": repo, "tags": ["9.9.9"]})

    registry.RequestHandlerClass = Registry
    foreign.RequestHandlerClass = Foreign
    if args.tls_cert:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(args.tls_cert, args.tls_key)
        registry.socket = context.wrap_socket(registry.socket, server_side=True)
    for server in (registry, foreign):
        threading.Thread(target=server.serve_forever, daemon=True).start()
    print(f"ready {port} {foreign_port}", flush=True)
    threading.Event().wait()


if __name__ == "__main__":
    sys.exit(main())
