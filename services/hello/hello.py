"""A tiny page that names the container serving it, so a load balancer's spread can be seen."""

import json
import socket
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

HOSTNAME = socket.gethostname()


class Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        if self.path == "/healthz":
            body, kind = b"ok\n", "text/plain"
        elif self.path == "/whoami":
            body, kind = json.dumps({"container": HOSTNAME}).encode(), "application/json"
        else:
            body = f"<!doctype html><title>swarmlab</title><h1>Hello from {HOSTNAME}</h1>\n".encode()
            kind = "text/html; charset=utf-8"
        self.send_response(200)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("X-Served-By", HOSTNAME)
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


if __name__ == "__main__":
    ThreadingHTTPServer(("0.0.0.0", 8000), Handler).serve_forever()
