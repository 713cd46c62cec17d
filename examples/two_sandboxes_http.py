"""Two sandboxes on a private bridge talk HTTP; a third on another bridge cannot.

    sudo python examples/two_sandboxes_http.py

Needs root (veth links and bridges). The bridges live in private network
namespaces made for this run, never in the host's own; nothing is left behind.
"""

from __future__ import annotations

import os
import select
import sys
import urllib.request

import nscg

SERVER = r"""
import http.server, socketserver, sys
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = b"hello from the server sandbox"
        self.send_response(200); self.send_header("Content-Length", str(len(body)))
        self.end_headers(); self.wfile.write(body)
    def log_message(self, *a): pass
# socketserver.TCPServer, not http.server.HTTPServer: that one looks its own name up
# in DNS at start, and the sandbox has no resolver to ask (it would wait for the timeout)
srv = socketserver.TCPServer((sys.argv[1], 8080), H)
print("ready", flush=True)
srv.serve_forever()
"""

CLIENT = r"""
import sys, urllib.request
try:
    print(urllib.request.urlopen(sys.argv[1], timeout=2).read().decode())
except OSError as e:
    print("no answer:", getattr(e, "reason", e))
"""


def main() -> int:
    """Start the server sandbox, ask it from two client sandboxes and from the host."""
    if os.geteuid() != 0:
        print("this example needs root (veth links and bridges)", file=sys.stderr)
        return 1
    with nscg.Bridge("10.89.0.0/24") as lan, nscg.Bridge("10.90.0.0/24") as other:
        server_net = lan.link()
        assert server_net.address is not None
        ip = str(server_net.address.ip)
        server = (
            nscg.Container()
            .with_network(server_net)
            .spawn(["python3", "-c", SERVER, ip], stdout=nscg.PIPE)
        )
        try:
            assert server.stdout is not None
            select.select([server.stdout], [], [], 20)
            assert server.stdout.readline() == b"ready\n"
            print(f"server sandbox listening on {ip}:8080")
            url = f"http://{ip}:8080/"
            for who, net in (
                ("client on the same bridge", lan),
                ("client on another bridge", other),
            ):
                r = (
                    nscg.Container()
                    .with_network(net.link())
                    .run(
                        ["python3", "-c", CLIENT, url], capture_output=True, timeout=30, check=True
                    )
                )
                print(f"{who}: {(r.stdout or b'').decode().strip()}")
            with nscg.PortForward(server, 8080, address=ip) as fw:
                body = urllib.request.urlopen(f"http://127.0.0.1:{fw.port}/", timeout=5).read()
                print(f"host via 127.0.0.1 forward: {body.decode()}")
        finally:
            server.kill()
            server.wait()
            server.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
