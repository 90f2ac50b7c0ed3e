#!/usr/bin/env python3
"""Measures pages in headless Chromium over the DevTools protocol (test infrastructure).

Usage: cdp.py CHROMIUM OUT_DIR WIDTHxHEIGHT URL [URL...]

Chromium runs with --remote-debugging-pipe (commands on fd 3, answers on
fd 4, each message JSON ended by a NUL byte: no websocket, no port). For each
width and URL it loads the page in a window of that size (no device
phone emulation: the viewport is set to exactly that width, as a
headless window cannot be narrower than 500 px), waits for the load,
and prints one JSON line: the URL, the width, the document's and the body's
scroll widths, the window's inner width, the number of script elements, the first
elements reaching past the window (outside a scrolling .wrap),
the rendered text and the serialized DOM. It saves a screenshot of each
page in OUT_DIR. The pages under test need no script; this one only reads
them.
"""

import base64
import json
import os
import subprocess
import sys
import tempfile


def main():
    chromium, out_dir, size, urls = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4:]
    width, height = (int(n) for n in size.split("x"))
    to_chrome_r, to_chrome_w = os.pipe()
    from_chrome_r, from_chrome_w = os.pipe()

    def wire():
        # Copies first, so that neither end is overwritten by the other's dup2
        # (the pipes may themselves be fds 3 and 4); dup2 clears close-on-exec.
        ours, theirs = os.dup(to_chrome_r), os.dup(from_chrome_w)
        os.dup2(ours, 3)
        os.dup2(theirs, 4)

    profile = tempfile.mkdtemp(prefix="converge-cdp-")
    proc = subprocess.Popen(
        [
            chromium,
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--hide-scrollbars",
            f"--window-size={width},{height}",
            f"--user-data-dir={profile}",
            "--remote-debugging-pipe",
            "about:blank",
        ],
        pass_fds=(3, 4),
        preexec_fn=wire,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    os.close(to_chrome_r)
    os.close(from_chrome_w)
    writer = os.fdopen(to_chrome_w, "wb")
    reader = os.fdopen(from_chrome_r, "rb")
    buffered = b""
    ids = iter(range(1, 1_000_000))

    def receive():
        nonlocal buffered
        while b"\0" not in buffered:
            chunk = reader.read1(65536)
            if not chunk:
                raise SystemExit("chromium closed the pipe")
            buffered += chunk
        message, buffered = buffered.split(b"\0", 1)
        return json.loads(message)

    seen = []

    def call(method, params=None, session=None):
        n = next(ids)
        message = {"id": n, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = session
        writer.write(json.dumps(message).encode() + b"\0")
        writer.flush()
        while True:
            answer = receive()
            if answer.get("id") == n:
                if "error" in answer:
                    raise SystemExit(f"{method}: {answer['error']}")
                return answer["result"]
            if "method" in answer:
                seen.append(answer["method"])

    def wait_for(event):
        while event not in seen:
            answer = receive()
            if "method" in answer:
                seen.append(answer["method"])

    try:
        targets = call("Target.getTargets")["targetInfos"]
        page = next(t for t in targets if t["type"] == "page")
        session = call("Target.attachToTarget", {"targetId": page["targetId"], "flatten": True})["sessionId"]
        call("Page.enable", session=session)
        # A headless window is at least 500 px wide: the viewport is set here.
        call("Emulation.setDeviceMetricsOverride", {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False}, session=session)
        for index, url in enumerate(urls):
            seen.clear()
            call("Page.navigate", {"url": url}, session=session)
            wait_for("Page.loadEventFired")
            measure = """JSON.stringify({
                scrollWidth: document.documentElement.scrollWidth,
                bodyScrollWidth: document.body.scrollWidth,
                innerWidth: window.innerWidth,
                scripts: document.getElementsByTagName('script').length,
                overflowing: Array.from(document.body.querySelectorAll('*'))
                    .filter(e => e.getBoundingClientRect().right > window.innerWidth + 0.5
                        && !(e.closest('.wrap') && e.closest('.wrap') !== e))
                    .slice(0, 5)
                    .map(e => e.tagName + '.' + e.className + ': ' + e.textContent.slice(0, 60)),
                text: document.body.innerText,
                dom: document.documentElement.outerHTML,
            })"""
            result = call("Runtime.evaluate", {"expression": measure, "returnByValue": True}, session=session)
            measured = json.loads(result["result"]["value"])
            measured.update({"url": url, "width": width})
            shot = call("Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True}, session=session)
            path = os.path.join(out_dir, f"page-{width}-{index}.png")
            with open(path, "wb") as f:
                f.write(base64.b64decode(shot["data"]))
            measured["screenshot"] = path
            print(json.dumps(measured), flush=True)
        try:
            call("Browser.close")
        except SystemExit:
            pass
    finally:
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


if __name__ == "__main__":
    main()
