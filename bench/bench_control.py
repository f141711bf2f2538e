"""Setpoint round trip on the services profile: an operator's submit until
the reconciled value reaches a socket subscribed to the machine, with the
plant simulator as the machine's gateway (command over /ws/gateway/, ack,
telemetry reporting the new target) — beside the bare ingest-to-socket
latency of a telemetry frame on the same kind of topic, measured in the
same run.

Sizes (environment):

  BENCH_CONTROL_ROUNDS=20     setpoint round trips measured
  BENCH_CONTROL_RATE=1        simulator frames per second per machine
  BENCH_CONTROL_RAMP=150      simulator ramp rate, rpm per second
  BENCH_CONTROL_STEP=150      how far each setpoint moves the target (rpm)
"""

import asyncio
import json
import subprocess
import tempfile
import time
import urllib.request
from datetime import UTC, datetime
from pathlib import Path

import websockets
from django.contrib.auth import get_user_model

from bench._support import (
    BIN,
    ROOT,
    bench_database,
    child_env,
    daphne_servers,
    env_float,
    env_int,
    fast_hashers,
    percentile,
    services_require,
    session_cookie_for,
)
from bench.report import Row, below

WAIT_S = 20.0


def run() -> list[Row]:
    services_require(who="bench_control")
    rounds = env_int("BENCH_CONTROL_ROUNDS", 20)
    rate = env_float("BENCH_CONTROL_RATE", 1.0)
    ramp = env_float("BENCH_CONTROL_RAMP", 150.0)
    step = env_int("BENCH_CONTROL_STEP", 150)
    with bench_database(), fast_hashers():
        from apps.plant.models import Machine
        from apps.plant.services import demo_plant_seed, gateway_issue

        demo_plant_seed(lines=1, machines_per_line=4, sensors=8, password="bench")
        machines = {m.code: m for m in Machine.objects.select_related("line")}
        _gw, sim_token = gateway_issue(name="bench-sim", machines=[machines["m:401"]])
        _gw2, ingest_token = gateway_issue(name="bench-ingest", machines=[machines["m:404"]])
        operator = get_user_model().objects.get(username="operator1")
        cookie = session_cookie_for(operator)
        with daphne_servers(1) as [url], tempfile.TemporaryDirectory() as tmp:
            log = open(Path(tmp) / "simulator.log", "w")
            simulator = subprocess.Popen(
                [
                    str(BIN / "python"),
                    "manage.py",
                    "run_gateway",
                    "--server",
                    url,
                    "--token",
                    sim_token,
                    "--rate",
                    str(rate),
                    "--ramp-rate",
                    str(ramp),
                    "--queue",
                    str(Path(tmp) / "queue.sqlite3"),
                ],
                cwd=ROOT,
                env=child_env(),
                stdout=log,
                stderr=subprocess.STDOUT,
            )
            try:
                trips, ingests = asyncio.run(
                    _measure(url, cookie, operator, machines, ingest_token, rounds, step)
                )
            finally:
                simulator.terminate()
                simulator.wait(timeout=15)
                log.close()
    ramp_s = step / ramp
    return [
        Row(
            f"setpoint round trip p50 (submit -> reconciled on the m:401 socket, "
            f"{rounds} rounds, simulator at {rate:g} Hz)",
            percentile(trips, 50) * 1000,
            "ms",
            "telemetry frame -> m:404 socket p50",
            percentile(ingests, 50) * 1000,
        ),
        Row(
            "setpoint round trip p99",
            percentile(trips, 99) * 1000,
            "ms",
            "telemetry frame -> socket p99",
            percentile(ingests, 99) * 1000,
            target=below(ramp_s * 1000 + 300, f"ramp {ramp_s * 1000:,.0f} ms + 300 ms"),
        ),
    ]


async def _measure(url, cookie, operator, machines, ingest_token, rounds, step):
    from asgiref.sync import sync_to_async

    from apps.control.services import setpoint_request

    socket = await websockets.connect(
        url.replace("http", "ws") + "/ws/live/",
        additional_headers={"Cookie": cookie, "Origin": url},
        open_timeout=30,
        max_size=None,
    )
    await socket.send(json.dumps({"type": "subscribe", "topics": ["m:401", "m:404"]}))

    async def until(predicate, timeout=WAIT_S) -> float:
        deadline = time.monotonic() + timeout
        while True:
            message = json.loads(await asyncio.wait_for(socket.recv(), deadline - time.monotonic()))
            if message["type"] == "ping":
                await socket.send(json.dumps({"type": "pong", "ts": message["ts"]}))
            elif message["type"] in ("snapshot", "delta") and predicate(message["html"]):
                return time.monotonic()

    await until(lambda html: "RUNNING" in html and "machine-header-m401" in html, timeout=60)
    trips = []
    for n in range(rounds):
        target = 1234 + step if n % 2 == 0 else 1234
        wanted = f'<span class="setpoint">{target}</span>'
        started = time.monotonic()
        await sync_to_async(setpoint_request)(
            actor=operator, machine=machines["m:401"], changes={"target_speed": target}
        )
        trips.append(await until(lambda html, w=wanted: w in html) - started)

    ingests = []
    for n in range(rounds):
        speed = 2000 + n
        frame = {
            "machine": "m:404",
            "ts": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
            "status": "RUNNING",
            "speed": speed,
        }
        request = urllib.request.Request(
            f"{url}/api/v1/telemetry",
            data=json.dumps({"batch_id": f"bench-control:{n}", "frames": [frame]}).encode(),
            headers={"Authorization": f"Bearer {ingest_token}", "Content-Type": "application/json"},
        )
        started = time.monotonic()
        await asyncio.to_thread(urllib.request.urlopen, request, timeout=20)
        ingests.append(
            await until(lambda html, s=speed: "machine-header-m404" in html and f">{s}<" in html)
            - started
        )
    await socket.close()
    return trips, ingests
