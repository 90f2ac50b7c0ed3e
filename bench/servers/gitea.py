"""A real Gitea (built by scripts/tools) for S12: loopback, SQLite, a temporary work dir.

The same set-up as the tests' harness (tests/it/support/gitea.rs): users made through Gitea's
CLI (`admin`, a site admin, and `author`, a collaborator with write access), tokens of every
scope, repositories through the API, pushes over HTTP with the real `git`.
"""

import json
import os
import secrets
import subprocess
import time
import urllib.error
import urllib.request

from harness import free_port, spawn, stop, tail
from servers.kube import kube_tools_bin


def gitea_bin():
    return os.path.join(kube_tools_bin(), "gitea")


class Gitea:
    def __init__(self, work):
        self.work = work
        os.makedirs(work, exist_ok=True)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.api = self.url + "/api/v1"
        self.ini = os.path.join(work, "app.ini")
        static_root = os.path.join(os.path.dirname(kube_tools_bin()), "share", "gitea")
        root = "I_AM_BEING_UNSAFE_RUNNING_AS_ROOT = true\n" if os.getuid() == 0 else ""
        with open(self.ini, "w") as f:
            f.write(f"""{root}APP_NAME = converge-bench
RUN_MODE = prod
WORK_PATH = {work}

[security]
INSTALL_LOCK = true
SECRET_KEY = {secrets.token_hex(16)}
INTERNAL_TOKEN = {secrets.token_hex(32)}

[database]
DB_TYPE = sqlite3
PATH = {work}/gitea.db

[server]
HTTP_ADDR = 127.0.0.1
HTTP_PORT = {self.port}
ROOT_URL = {self.url}/
DISABLE_SSH = true
OFFLINE_MODE = true
STATIC_ROOT_PATH = {static_root}
APP_DATA_PATH = {work}/data
LFS_START_SERVER = false

[repository]
ROOT = {work}/repos

[service]
DISABLE_REGISTRATION = true

[log]
MODE = file
LEVEL = Warn
ROOT_PATH = {work}/log

[queue]
TYPE = level

[indexer]
ISSUE_INDEXER_TYPE = db
REPO_INDEXER_ENABLED = false

[cron]
ENABLED = false

[mailer]
ENABLED = false

[api]
MAX_RESPONSE_ITEMS = 100
""")
        self.cli("migrate")
        self.tokens = {}
        for user in ("admin", "author"):
            args = ["admin", "user", "create", "--username", user, "--password", "converge-bench-1",
                    "--must-change-password=false", "--email", f"{user}@company.com"]
            if user == "admin":
                args.append("--admin")
            self.cli(*args)
            self.tokens[user] = self.cli("admin", "user", "generate-access-token", "--username", user,
                                         "--token-name", f"t{secrets.token_hex(4)}", "--scopes", "all",
                                         "--raw")
        self.log = open(os.path.join(work, "gitea.log"), "ab")
        env = dict(os.environ, GITEA_WORK_DIR=work)
        env.pop("GITEA_CUSTOM", None)
        self.p = spawn([gitea_bin(), "web", "--config", self.ini, "--work-path", work], cwd=work,
                       env=env, stdout=self.log, stderr=self.log)
        deadline = time.time() + 60
        while True:
            if self.p.poll() is not None:
                raise RuntimeError(f"gitea web exited: {tail(os.path.join(work, 'gitea.log'))}")
            try:
                with urllib.request.urlopen(self.api + "/version", timeout=2) as r:  # noqa: S310
                    if r.status == 200:
                        break
            except OSError:
                pass
            if time.time() > deadline:
                raise RuntimeError("gitea not ready in a minute")
            time.sleep(0.1)

    def cli(self, *args):
        env = dict(os.environ, GITEA_WORK_DIR=self.work)
        env.pop("GITEA_CUSTOM", None)
        out = subprocess.run([gitea_bin(), *args, "--config", self.ini, "--work-path", self.work],
                             capture_output=True, text=True, env=env, check=False)
        if out.returncode != 0:
            raise RuntimeError(f"gitea {args}: {out.stdout}{out.stderr}")
        return out.stdout.strip()

    def call(self, user, method, path, body=None):
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.api + path, data=data, method=method,  # noqa: S310
                                     headers={"Authorization": f"token {self.tokens[user]}",
                                              "Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=30) as r:  # noqa: S310 (loopback only)
                text = r.read()
        except urllib.error.HTTPError as e:
            raise RuntimeError(f"{method} {path}: {e.code} {e.read()[:300]!r}") from e
        return json.loads(text) if text.strip() else None

    def repo(self, name):
        self.call("admin", "POST", "/user/repos", {"name": name, "auto_init": True, "default_branch": "main"})
        self.call("admin", "PUT", f"/repos/admin/{name}/collaborators/author", {"permission": "write"})
        return f"{self.url}/admin/{name}.git"

    def push_url(self, user, name):
        return f"http://{user}:{self.tokens[user]}@127.0.0.1:{self.port}/admin/{name}.git"

    def stop(self):
        stop(self.p)
        self.log.close()
