"""A stand-in for the device API, served in-process on 127.0.0.1.

Telemetry POSTs are answered from a script (status, body, headers) and then
with 202, each batch id stored once like the real endpoint. `GET
/api/v1/gateway` answers with `plant` (404 while it is None, 401 once
`token_refused` is set, 503 while `plant_unavailable` is). The server
can be stopped and started again on the same port to play a link that goes
down and comes back.
"""

import gzip
import json
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class FakeTelemetryServer:
    def __init__(self, port: int | None = None):
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.script: list[tuple[int, dict, dict]] = []
        self.requests: list[dict] = []  # every payload received, in order
        self.headers: list[dict] = []
        self.stored: dict[str, list[dict]] = {}  # batch id -> frames, each stored once
        self.plant: dict | None = None  # the answer to GET /api/v1/gateway
        self.plant_headers: list[dict] = []
        self.token_refused = False  # answer GET /api/v1/gateway 401, as for a revoked token
        self.plant_unavailable = False  # answer it 503, as an overloaded server would
        self.lock = threading.Lock()
        self._httpd = None
        self._thread = None
        self._connections: set[socket.socket] = set()

    # Answers
    # -------

    def answer(self, status: int, body: dict | None = None, headers: dict | None = None, times=1):
        self.script.extend([(status, body or {}, headers or {})] * times)

    def _handle(self, handler: BaseHTTPRequestHandler) -> None:
        length = int(handler.headers.get("Content-Length", 0))
        raw = handler.rfile.read(length)
        if handler.headers.get("Content-Encoding") == "gzip":
            raw = gzip.decompress(raw)
        payload = json.loads(raw)
        with self.lock:
            self.requests.append(payload)
            self.headers.append(dict(handler.headers))
            if self.script:
                status, body, headers = self.script.pop(0)
            else:
                duplicate = payload["batch_id"] in self.stored
                self.stored.setdefault(payload["batch_id"], payload["frames"])
                status, headers = 202, {}
                body = {"accepted": len(payload["frames"]), "duplicate": duplicate}
        self._respond(handler, status, body, headers)

    def _handle_get(self, handler: BaseHTTPRequestHandler) -> None:
        with self.lock:
            self.plant_headers.append(dict(handler.headers))
            plant, refused, unavailable = self.plant, self.token_refused, self.plant_unavailable
        if refused:
            self._respond(handler, 401, {"error": "unauthorized"}, {})
        elif unavailable:
            self._respond(handler, 503, {"error": "unavailable"}, {})
        elif handler.path == "/api/v1/gateway" and plant is not None:
            self._respond(handler, 200, plant, {})
        else:
            self._respond(handler, 404, {"error": "not_found"}, {})

    def _respond(self, handler, status: int, body: dict, headers: dict) -> None:
        data = json.dumps(body).encode()
        handler.send_response(status)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(data)))
        for key, value in headers.items():
            handler.send_header(key, value)
        handler.end_headers()
        handler.wfile.write(data)

    @property
    def sent_batch_ids(self) -> list[str]:
        return [p["batch_id"] for p in self.requests]

    @property
    def stored_frames(self) -> int:
        return sum(len(frames) for frames in self.stored.values())

    # Up and down
    # -----------

    def start(self) -> "FakeTelemetryServer":
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True

            def setup(self):
                super().setup()
                with server.lock:
                    server._connections.add(self.connection)

            def do_POST(self):  # noqa: N802
                server._handle(self)

            def do_GET(self):  # noqa: N802
                server._handle_get(self)

            def log_message(self, *args):
                pass

        ThreadingHTTPServer.allow_reuse_address = True
        self._httpd = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, args=(0.05,), daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._httpd:
            self._httpd.shutdown()
            self._httpd.server_close()
            # Kept-alive connections would otherwise go on being served.
            with self.lock:
                for conn in self._connections:
                    try:
                        conn.shutdown(socket.SHUT_RDWR)
                    except OSError:
                        pass
                self._connections.clear()
            self._thread.join(5)
            self._httpd = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()
