"""`make run`'s credential for the simulator: the server issues it, the
gateway only reads it (`run_gateway --demo`), so the agent never needs the
server's database."""

import os
from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from apps.plant.models import Gateway, Machine
from apps.plant.services import gateway_issue, gateway_revoke

DEMO_GATEWAY = "simulator"


def demo_token_file() -> Path:
    # Where `run_gateway --demo` looks: beside the demo gateway's queue.
    return settings.VAR_DIR / "edge" / f"{DEMO_GATEWAY}.token"


def token_file_write(path: Path, token: str) -> None:
    """Replace the file atomically, readable by its owner only (0600)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)  # a leftover partial file may have had wider rights
        os.write(fd, f"{token}\n".encode())
    finally:
        os.close(fd)
    os.replace(partial, path)


class Command(BaseCommand):
    help = (
        f"Local development only: issue gateway {DEMO_GATEWAY!r} a fresh token bound to every "
        "machine, revoking the previous one, and write the token to a file (mode 0600) for "
        "`run_gateway --demo`."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--token-file", type=Path, default=None, help=f"default {demo_token_file()}"
        )

    def handle(self, *args, token_file, **options):
        machines = list(Machine.objects.all())
        if not machines:
            raise CommandError("the plant has no machines; run `manage.py seed_demo_plant` first")
        # Names are unique: the old credential is renamed out of the way, so
        # its audit trail stays and its token stops working.
        for old in Gateway.objects.filter(name=DEMO_GATEWAY):
            gateway_revoke(gateway=old)
            Gateway.objects.filter(pk=old.pk).update(name=f"{DEMO_GATEWAY}-revoked-{old.pk}")
        gateway, token = gateway_issue(name=DEMO_GATEWAY, machines=machines)
        path = token_file or demo_token_file()
        token_file_write(path, token)
        self.stdout.write(
            f"Demo gateway {gateway.name!r} bound to {len(machines)} machines; "
            f"token {gateway.token_hint}… written to {path}."
        )
