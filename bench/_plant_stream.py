"""The plant stream of bench_live, in a process of its own: one telemetry
batch per period with a frame of every streamed machine (100 sensors each),
POSTed gzipped to the ingest daphnes in turn.

    python -m bench._plant_stream < CONFIG_JSON

CONFIG_JSON, the first line of stdin: {"urls", "token", "codes", "keys", "hz"}.
It streams until stdin closes (or for 1 h), then prints "SENT FAILED".

Why a process: building a batch is about 25 ms of Python a second (10,000
random readings, JSON, gzip); in the process that measures the sockets it
held that process's interpreter lock while deltas were arriving, which
delayed the app's figures and not the bare baseline's (measured without it).
"""

import gzip
import json
import random
import sys
import threading
import time
import urllib.request
import uuid
from datetime import UTC, datetime

LIMIT_S = 3600


class Stream:
    def __init__(self, config: dict):
        self.urls, self.token = config["urls"], config["token"]
        self.codes, self.keys = config["codes"], config["keys"]
        self.period = 1.0 / config["hz"]
        self.stop = threading.Event()
        self.sent = self.failed = 0
        self.rng = random.Random(7)
        self.speeds = {code: 1500.0 for code in self.codes}

    def body(self) -> bytes:
        now = datetime.now(UTC)
        ts = now.strftime("%Y-%m-%dT%H:%M:%S.") + f"{now.microsecond // 1000:03d}Z"
        frames = []
        for code in self.codes:
            self.speeds[code] = max(0.0, self.speeds[code] + self.rng.gauss(0, 5))
            frames.append(
                {
                    "machine": code,
                    "ts": ts,
                    "status": "RUNNING",
                    "speed": round(self.speeds[code]),
                    "target_speed": 1500,
                    "mode": "RUN",
                    "readings": {k: self.rng.gauss(50.0, 5.0) for k in self.keys},
                }
            )
        doc = {"batch_id": f"live-{uuid.uuid4().hex}", "frames": frames}
        return gzip.compress(json.dumps(doc, separators=(",", ":")).encode(), 6, mtime=0)

    def run(self) -> None:
        started = time.monotonic()
        tick = 0
        while not self.stop.is_set() and time.monotonic() - started < LIMIT_S:
            url = self.urls[tick % len(self.urls)]
            request = urllib.request.Request(
                f"{url}/api/v1/telemetry",
                data=self.body(),
                headers={
                    "Authorization": f"Bearer {self.token}",
                    "Content-Type": "application/json",
                    "Content-Encoding": "gzip",
                },
            )
            try:
                with urllib.request.urlopen(request, timeout=10) as response:
                    ok = response.status == 202
            except OSError:
                ok = False
            self.sent += ok
            self.failed += not ok
            tick += 1
            self.stop.wait(max(0.0, started + tick * self.period - time.monotonic()))


def main() -> None:
    stream = Stream(json.loads(sys.stdin.readline()))

    def until_stdin_closes():
        sys.stdin.read()
        stream.stop.set()

    threading.Thread(target=until_stdin_closes, daemon=True).start()
    stream.run()
    print(stream.sent, stream.failed, flush=True)


if __name__ == "__main__":
    main()
