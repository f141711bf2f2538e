"""Shared bits of the edge tests."""

from datetime import UTC, datetime

T0 = datetime(2026, 11, 23, 10, 0, tzinfo=UTC)
MACHINES = {"m:401": ["speed", "temp", "vibration"], "m:402": ["speed", "temp", "pressure_01"]}


def fill(agent, batches: int) -> list[str]:
    """Queue `batches` one-second samples without sending anything."""
    start = agent.simulator.t
    return [bid for i in range(batches) for bid in agent.produce_once(start + i + 1)]
