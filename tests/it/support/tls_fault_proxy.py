"""A TLS-terminating fault proxy for the tests (Python 3's standard library
only): clients connect over TLS with a certificate for 127.0.0.1 from a test
CA; each connection is relayed, decrypted, to an upstream HTTPS server (the
Kubernetes API server, its CA verified) over a TLS connection of its own. So
the proxy sees HTTP, and can cut a connection in the middle of a response:
after some bytes of the response to a request whose request line matches
(a watch already streaming included: the rule is read at every chunk), it
resets the client's TCP connection (SO_LINGER 0), without a TLS
close_notify.

usage: tls_fault_proxy.py --cert C --key K --upstream HOST:PORT --upstream-ca CA
                          --control FILE --log FILE
Prints `listening PORT` once it accepts connections.

The control file holds one line, `PATTERN BYTES COUNT` (or nothing: relay
only): the next COUNT responses to requests whose request line contains
PATTERN are cut once BYTES bytes of them have gone to the client. The log
gets one line per cut: `cut <request line>`.
"""

import argparse
import asyncio
import os
import socket
import ssl
import struct
import sys

METHODS = (b"GET ", b"POST ", b"PUT ", b"PATCH ", b"DELETE ", b"HEAD ", b"OPTIONS ")


class Faults:
    """The control file's rule and how many cuts it still allows."""

    def __init__(self, control, log):
        self.control = control
        self.log = log
        self.mtime = None
        self.pattern = None
        self.bytes = 0
        self.left = 0

    def refresh(self):
        try:
            st = os.stat(self.control)
            mtime = (st.st_ino, st.st_mtime_ns)  # written by rename: a new inode
        except FileNotFoundError:
            return
        if mtime == self.mtime:
            return
        self.mtime = mtime
        with open(self.control, encoding="utf-8") as f:
            parts = f.read().split()
        if len(parts) == 3:
            self.pattern, self.bytes, self.left = parts[0].encode(), int(parts[1]), int(parts[2])
        else:
            self.pattern, self.left = None, 0

    def armed_for(self, request_line):
        self.refresh()
        return self.pattern is not None and self.left > 0 and self.pattern in request_line

    def cut(self, request_line):
        self.left -= 1
        with open(self.log, "a", encoding="utf-8") as f:
            f.write("cut " + request_line.decode("latin-1") + "\n")


class Connection:
    def __init__(self):
        self.request_line = b""
        self.sent = 0  # bytes of the current response sent to the client


async def client_to_upstream(reader, writer, conn, faults):
    """Relays requests; notes each request line (HTTP/1.1, no pipelining:
    the next response answers it)."""
    try:
        while True:
            data = await reader.read(65536)
            if not data:
                break
            for line in data.split(b"\r\n"):
                if line.startswith(METHODS):
                    conn.request_line = line
                    conn.sent = 0
            writer.write(data)
            await writer.drain()
    except (ConnectionError, ssl.SSLError, OSError):
        pass
    finally:
        writer.close()


def reset(writer):
    """Closes the connection with a TCP reset: no close_notify, no FIN."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError:
            pass
    writer.transport.abort()


async def upstream_to_client(reader, writer, conn, faults):
    try:
        while True:
            data = await reader.read(65536)
            if not data:
                break
            # Asked at every chunk: a watch streaming since before the
            # rule was written is cut at its next event.
            if faults.armed_for(conn.request_line) and conn.sent + len(data) >= faults.bytes:
                keep = max(faults.bytes - conn.sent, 0)
                writer.write(data[:keep])
                await writer.drain()
                faults.cut(conn.request_line)
                reset(writer)
                return True
            conn.sent += len(data)
            writer.write(data)
            await writer.drain()
    except (ConnectionError, ssl.SSLError, OSError):
        pass
    writer.close()
    return False


async def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--cert", required=True)
    parser.add_argument("--key", required=True)
    parser.add_argument("--upstream", required=True)
    parser.add_argument("--upstream-ca", required=True)
    parser.add_argument("--control", required=True)
    parser.add_argument("--log", required=True)
    args = parser.parse_args()
    host, port = args.upstream.rsplit(":", 1)
    faults = Faults(args.control, args.log)

    server_tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_tls.load_cert_chain(args.cert, args.key)
    server_tls.set_alpn_protocols(["http/1.1"])
    upstream_tls = ssl.create_default_context(cafile=args.upstream_ca)
    upstream_tls.set_alpn_protocols(["http/1.1"])

    async def handle(client_reader, client_writer):
        try:
            up_reader, up_writer = await asyncio.open_connection(
                host, int(port), ssl=upstream_tls, server_hostname=host
            )
        except (ConnectionError, ssl.SSLError, OSError):
            reset(client_writer)
            return
        conn = Connection()
        upward = asyncio.ensure_future(client_to_upstream(client_reader, up_writer, conn, faults))
        cut = await upstream_to_client(up_reader, client_writer, conn, faults)
        if cut:
            up_writer.transport.abort()
        upward.cancel()

    server = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=server_tls)
    print("listening", server.sockets[0].getsockname()[1], flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        sys.exit(0)
