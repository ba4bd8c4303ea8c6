"""The viewer over HTTP: Python's own threading HTTP server, one static page and a small JSON API.

    GET  /                      the page (static/index.html, app.js, style.css under /static/)
    GET  /api/info              classes, members, upload limit, whether an evaluation folder is open
    POST /api/predict?name=F    body: the image file's bytes -> its view (dermo.viewer.render)
    GET  /api/eval              the evaluation table;  GET /api/eval/<row>: that row's view
    GET  /files/<root>/<name>   a file of the evaluation folder ("eval") or of a member's run folder ("m<i>")

Refusals answer {"error": one line} with 400/404/413 (dermo.viewer.problems); anything unexpected answers 500
with its one-line reason, and the server goes on. Requests whose Host is not the loopback name are refused
while bound to the loopback interface (DNS rebinding), and nothing outside the run and evaluation folders is
ever read on a browser's say-so: evaluation images are named by row number only.
"""
from __future__ import annotations

import json
import mimetypes
import re
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

from dermo.errors import DermoError
from dermo.viewer.app import Viewer
from dermo.viewer.problems import NotFound, ViewerError, status_of

STATIC = Path(__file__).resolve().parent / "static"
PAGES = {"index.html": "text/html", "app.js": "text/javascript", "style.css": "text/css"}
LOOPBACK = ("127.0.0.1", "localhost", "::1")
DRAIN = 4                 # uploads up to DRAIN x the limit are read before refusing them; larger: connection closed


class Handler(BaseHTTPRequestHandler):
    server_version = "dermo-viewer"
    protocol_version = "HTTP/1.1"
    timeout = 60                  # a client that stops sending mid-upload is dropped after this many seconds

    def log_message(self, format, *args):      # noqa: A002 - quiet: the page shows every answer
        pass

    def do_GET(self):
        self._answer(self._get)

    def do_POST(self):
        self.close_connection = True           # the body may be left unread when the upload is refused
        self._answer(self._post)

    def _answer(self, route) -> None:
        try:
            self._check_host()
            status, body, kind = 200, *route(urlsplit(self.path))
        except DermoError as e:
            status, body, kind = status_of(e), *_json({"error": str(e)})
        except Exception as e:  # noqa: BLE001 - a bug answers 500 in one line; the server keeps serving
            print(f"dermo.viewer: {self.command} {self.path}: {type(e).__name__}: {e}", file=sys.stderr)
            status, body, kind = 500, *_json({"error": f"internal error ({type(e).__name__}: {e})"})
        try:
            self.send_response(status)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            self.send_header("X-Content-Type-Options", "nosniff")
            self.end_headers()
            self.wfile.write(body)
        except ConnectionError:                # the page went away (closed, reloaded): nobody to tell
            self.close_connection = True

    def _check_host(self) -> None:
        if self.server.server_address[0] not in LOOPBACK:
            return
        host = (self.headers.get("Host") or "").rsplit(":", 1)[0].strip("[]")
        if host not in LOOPBACK:
            raise ViewerError(f"Host {host!r} refused: the viewer answers http://127.0.0.1 only (start it with "
                              "--host to serve other names)")

    def _get(self, url) -> tuple[bytes, str]:
        path = unquote(url.path)
        if path in ("/", "/index.html"):
            return _static("index.html")
        if path.startswith("/static/") and path[8:] in PAGES:
            return _static(path[8:])
        if path == "/api/info":
            return _json(self.server.viewer.info())
        if path == "/api/eval":
            return _json(self.server.viewer.eval_table())
        if m := re.fullmatch(r"/api/eval/(\d{1,9})", path):
            return _json(self.server.viewer.eval_row(int(m.group(1))))
        if path.startswith("/files/"):
            root, _, relative = path[7:].partition("/")
            target = self.server.viewer.file(root, relative)
            return target.read_bytes(), mimetypes.guess_type(target.name)[0] or "application/octet-stream"
        raise NotFound(f"{path}: no such page")

    def _post(self, url) -> tuple[bytes, str]:
        name = parse_qs(url.query).get("name", ["upload"])[0]
        size = self.headers.get("Content-Length", "")
        if not size.isdigit():
            raise ViewerError(f"{name}: send the image file as the request body, with its Content-Length")
        size, limit = int(size), self.server.viewer.max_upload
        if size > limit:
            if size <= DRAIN * limit:          # read and dropped, so that the client gets to read the answer
                _drain(self.rfile, size)
            self.server.viewer.check_size(name, size)
        data = self.rfile.read(size)
        if len(data) < size:
            raise ViewerError(f"{name}: the upload was cut off ({len(data)} of {size} bytes); send it again")
        if url.path != "/api/predict":
            raise NotFound(f"{url.path}: no such page")
        return _json(self.server.viewer.upload(name, data))


def _drain(stream, size: int) -> None:
    while size > 0 and (chunk := stream.read(min(size, 2 ** 20))):
        size -= len(chunk)


def _json(obj) -> tuple[bytes, str]:
    return json.dumps(obj, allow_nan=False).encode(), "application/json"


def _static(name: str) -> tuple[bytes, str]:
    return (STATIC / name).read_bytes(), f"{PAGES[name]}; charset=utf-8"


def make_server(viewer: Viewer | None, host: str = "127.0.0.1", port: int = 0) -> ThreadingHTTPServer:
    """A server bound to host:port (port 0: any free port; server.server_address says which) answering for
    `viewer` (its `viewer` attribute, which may be set later, before serve_forever()); serve_forever() serves
    and shutdown() stops it."""
    server = ThreadingHTTPServer((host, port), Handler)
    server.daemon_threads = True
    server.viewer = viewer
    return server


def url_of(server: ThreadingHTTPServer) -> str:
    host, port = server.server_address[:2]
    return f"http://{'[' + host + ']' if ':' in host else host}:{port}/"
