#!/usr/bin/env python3
"""RSS (and, with a third argument, a heaptrack profile) of a converge daemon on N claims of
/tmp/scale-x/wN (bench/gen.py --n N --out /tmp/scale-x/wN) after its first pass and a one-claim change:
heap-daemon.py BIN N [heaptrack]"""
import os, sys, subprocess, time, json, shutil, socket, urllib.request, re
bin_, n = sys.argv[1], int(sys.argv[2])
heap = len(sys.argv) > 3
w = f"/tmp/scale-x/w{n}"
run = f"/tmp/scale-x/run-{n}-{os.getpid()}"
os.makedirs(run)
shutil.copytree(f"{w}/claims-json", f"{run}/claims")
s = socket.socket(); s.bind(("127.0.0.1", 0)); port = s.getsockname()[1]; s.close()
tags = open(f"{w}/tags.yaml").read()
open(f"{run}/converge.yaml", "w").write(f"""sources:
  - name: local
    kind: dir
    path: claims
target:
  kind: manifests
  path: out
state_dir: state
api:
  listen: 127.0.0.1:{port}
safety:
  max_delete_fraction: 1.0
{tags}""")
cmd = [bin_, "run"]
if heap:
    cmd = ["heaptrack", "-o", f"/tmp/scale-x/heap-{n}"] + cmd
log = open(f"{run}/log", "w")
p = subprocess.Popen(cmd, cwd=run, stdout=log, stderr=log)
def get(path):
    try:
        return urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5).status
    except Exception:
        return 0
t0 = time.time()
while get("/ready") != 200:
    time.sleep(0.5)
    if p.poll() is not None: sys.exit("died")
ready = time.time() - t0
time.sleep(3)
def pid():
    if not heap: return p.pid
    out = subprocess.run(["pgrep", "-P", str(p.pid)], capture_output=True, text=True).stdout.split()
    # heaptrack runs the program as a child
    for c in out:
        kids = subprocess.run(["pgrep", "-P", c], capture_output=True, text=True).stdout.split()
        if kids: return int(kids[0])
        return int(c)
    return p.pid
def status():
    st = open(f"/proc/{pid()}/status").read()
    return {k: int(re.search(k + r":\s+(\d+)", st).group(1)) for k in ("VmRSS", "VmHWM")}
first = status()
# one-claim change
f = sorted(os.listdir(f"{run}/claims"))[0]
path = f"{run}/claims/{f}"
doc = json.load(open(path)); doc["user"] = doc["user"]
open(path, "a").write("\n")
time.sleep(4)
after = status()
print(json.dumps({"n": n, "ready_s": round(ready, 1), "first": first, "after_change": after}))
if heap:
    subprocess.run(["kill", "-KILL", str(pid())])
else:
    p.terminate()
p.wait()
shutil.rmtree(run, ignore_errors=True)
