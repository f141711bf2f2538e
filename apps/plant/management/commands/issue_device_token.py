from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError

from apps.plant.models import Gateway, Machine
from apps.plant.services import gateway_issue


class Command(BaseCommand):
    help = (
        "Create a gateway credential bound to machines. The token is printed once, "
        "as the last line, and never stored."
    )

    def add_arguments(self, parser):
        parser.add_argument("name")
        parser.add_argument("--machines", required=True, help="comma-separated, e.g. m:401,m:402")

    def handle(self, *args, name, machines, **options):
        codes = [c.strip() for c in machines.split(",") if c.strip()]
        if not codes:
            raise CommandError("--machines needs at least one machine code, e.g. m:401")
        found = {m.code: m for m in Machine.objects.filter(code__in=codes)}
        missing = [c for c in codes if c not in found]
        if missing:
            raise CommandError(f"Unknown machine(s): {', '.join(missing)}")
        if Gateway.objects.filter(name=name).exists():
            raise CommandError(
                f"A gateway named {name!r} already exists; revoke it or pick another name."
            )
        try:
            gateway, token = gateway_issue(name=name, machines=list(found.values()))
        except ValidationError as exc:
            raise CommandError("; ".join(exc.messages)) from exc
        self.stdout.write(
            f"Gateway {gateway.name} bound to {', '.join(sorted(found))}. "
            "Store this token now; it cannot be shown again:"
        )
        self.stdout.write(token)
