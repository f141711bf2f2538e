"""Setpoint control: the lifecycle of control transactions and their
pending locks.

    request ──▶ inflight ──ack──▶ confirmed ──telemetry shows value──▶ reconciled
                   │  └──nack──▶ failed            │
                   ├──10 s without reconcile──▶ expired
                   ├──another operator locks the field──▶ superseded
                   └──machine enters a critical status──▶ failed ("safety override")

Every step is one small atomic block that claims the rows it changes,
writes its audit events, and after commit announces the machines to the
live layer (and toasts to the actor):

- `requests`: an operator's setpoints become inflight locks;
- `dispatch`: commands to gateways, and their acks and nacks;
- `locks`: reconcile against what machines report, the safety override, expiry;
- `transactions`: a transaction's status from its locks' states;
- `notices`: the toasts.
"""

from .dispatch import (
    command_answer,
    command_payloads,
    commands_dispatch,
    commands_pending_for_gateway,
    gateway_group,
)
from .locks import locks_housekeeping, locks_reconcile
from .requests import setpoint_batch_request, setpoint_request, setpoint_value_clean
from .transactions import tx_status_for

__all__ = [
    "command_answer",
    "command_payloads",
    "commands_dispatch",
    "commands_pending_for_gateway",
    "gateway_group",
    "locks_housekeeping",
    "locks_reconcile",
    "setpoint_batch_request",
    "setpoint_request",
    "setpoint_value_clean",
    "tx_status_for",
]
