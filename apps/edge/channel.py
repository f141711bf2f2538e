"""What the Agent's side channels share (the command socket, the plant
refresh): `start(agent)` runs `_run` on a daemon thread named after the
gateway, `bind(agent)` attaches without one (tests drive it by hand)."""

import threading


class BackgroundChannel:
    thread_suffix = "channel"

    def __init__(self):
        self.agent = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def bind(self, agent):
        self.agent = agent
        return self

    def start(self, agent) -> None:
        self.bind(agent)
        self._stop.clear()
        name = f"{getattr(agent, 'name', 'gateway')}-{self.thread_suffix}"
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        raise NotImplementedError
