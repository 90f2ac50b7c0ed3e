"""nginx serving the same bodies as the API (S5's peer)."""

import os
import signal
import subprocess

from harness import free_port, spawn, stop, wait_port


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
