"""Shared bits of the edge tests."""

from datetime import UTC, datetime, timedelta

from apps.edge.simulator import iso_ms

T0 = datetime(2026, 11, 23, 10, 0, tzinfo=UTC)
MACHINES = {"m:401": ["speed", "temp", "vibration"], "m:402": ["speed", "temp", "pressure_01"]}


def fill(agent, batches: int) -> list[str]:
    """Queue `batches` one-second samples without sending anything."""
    start = agent.simulator.t
    return [bid for i in range(batches) for bid in agent.produce_once(start + i + 1)]


def command(tx_id: str, machine: str = "m:401", *, expires_in: float = 30, **changes) -> dict:
    """A setpoint command as the server sends it, expiring `expires_in` s from now."""
    return {
        "type": "command",
        "tx_id": tx_id,
        "machine": machine,
        "set": changes,
        "expires_at": iso_ms(datetime.now(UTC) + timedelta(seconds=expires_in)),
    }
