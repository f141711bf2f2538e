"""A stand-in for the server's `/ws/gateway/` socket, served in-process on 127.0.0.1.

It records every handshake and every message from the gateway, sends what a
test tells it to, re-sends `pending` commands on every connect like the real
server, can refuse handshakes with an HTTP status and can drop connections.
"""

import json
import threading

from websockets.exceptions import ConnectionClosed
from websockets.sync.server import serve

from .fake_server import free_port


class FakeGatewayServer:
    def __init__(self, port: int | None = None):
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"  # what the gateway gets as --server
        self.refuse: int | None = None  # answer handshakes with this HTTP status
        self.pending: list[dict] = []  # sent on every connect, as the server re-sends
        self.handshakes: list[dict] = []  # path and headers of each handshake
        self.received: list[dict] = []  # every message from the gateway, in order
        self.connections = 0
        self.cond = threading.Condition()
        self._open: list = []
        self._server = None
        self._thread = None

    # Talking
    # -------

    def send(self, message: dict) -> None:
        """To the gateway on the newest open connection."""
        # The gateway may see the handshake done before the handler here starts.
        self.wait_for(lambda: self._open, what="an open connection")
        with self.cond:
            conn = self._open[-1]
        conn.send(json.dumps(message))

    def drop(self) -> None:
        """Close every open connection, as a restarting server would."""
        with self.cond:
            conns = list(self._open)
        for conn in conns:
            conn.close(1012, "service restart")

    def wait_for(self, predicate, timeout: float = 5.0, what: str = "the gateway"):
        with self.cond:
            if not self.cond.wait_for(predicate, timeout):
                raise AssertionError(
                    f"timed out waiting for {what}; received {self.received}, "
                    f"{self.connections} connections, {len(self.handshakes)} handshakes"
                )

    def answer_to(self, tx_id: str, machine: str = "m:401", timeout: float = 5.0) -> dict:
        """The gateway's (first unread) answer to one command."""

        def find():
            return next(
                (
                    m
                    for m in self.received
                    if m.get("tx_id") == tx_id
                    and m.get("machine") == machine
                    and not m.get("_read")
                ),
                None,
            )

        self.wait_for(lambda: find() is not None, timeout, f"an answer to {tx_id} {machine}")
        with self.cond:
            message = find()
            message["_read"] = True
        return {k: v for k, v in message.items() if k != "_read"}

    # Serving
    # -------

    def _process_request(self, conn, request):
        with self.cond:
            self.handshakes.append({"path": request.path, "headers": request.headers})
            self.cond.notify_all()
        if self.refuse:
            return conn.respond(self.refuse, "refused by the fake server\n")
        if request.path != "/ws/gateway/":
            return conn.respond(404, "not found\n")
        return None

    def _handler(self, conn) -> None:
        with self.cond:
            self.connections += 1
            self._open.append(conn)
            pending = list(self.pending)
            self.cond.notify_all()
        try:
            for message in pending:
                conn.send(json.dumps(message))
            for raw in conn:
                with self.cond:
                    self.received.append(json.loads(raw))
                    self.cond.notify_all()
        except ConnectionClosed:
            pass
        finally:
            with self.cond:
                self._open.remove(conn)
                self.cond.notify_all()

    @property
    def open_connections(self) -> int:
        """Read under `cond`, e.g. in a `wait_for` predicate."""
        return len(self._open)

    def start(self) -> "FakeGatewayServer":
        self._server = serve(
            self._handler, "127.0.0.1", self.port, process_request=self._process_request
        )
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server:
            self.drop()
            self._server.shutdown()
            self._thread.join(5)
            self._server = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()
