"""The bare baseline of bench_live: a minimal `websockets` server that
sends the same snapshot and delta text the live hub sends, in the same
envelope, to every client that subscribes.

    python -m bench._bare_ws PORT FRAGMENTS_JSON

FRAGMENTS_JSON holds {"topic", "snapshot_html", "delta_html"}. A client on
/control sends a sequence number; the server then broadcasts one delta
with that seq and its own time.time() as ts to every subscriber.
"""

import asyncio
import json
import sys
import time

from websockets.asyncio.server import broadcast, serve


def envelope(kind: str, topic: str, seq: int, html: str) -> str:
    # Same shape and separators as apps.live.hub.envelope.
    return json.dumps(
        {"type": kind, "topic": topic, "seq": seq, "ts": round(time.time(), 3), "html": html},
        separators=(",", ":"),
    )


async def main(port: int, fragments_path: str) -> None:
    with open(fragments_path) as f:
        fragments = json.load(f)
    topic = fragments["topic"]
    subscribers = set()

    async def handler(ws):
        if ws.request.path == "/control":
            async for message in ws:
                broadcast(
                    subscribers, envelope("delta", topic, int(message), fragments["delta_html"])
                )
            return
        try:
            async for message in ws:
                kind = json.loads(message).get("type")
                if kind == "subscribe":
                    subscribers.add(ws)
                    await ws.send(json.dumps({"type": "subscribed", "topic": topic}))
                    await ws.send(envelope("snapshot", topic, 0, fragments["snapshot_html"]))
        finally:
            subscribers.discard(ws)

    async with serve(handler, "127.0.0.1", port, compression=None, ping_interval=None):
        await asyncio.get_running_loop().create_future()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]), sys.argv[2]))
