from django.conf import settings
from django.core.management.base import BaseCommand

from apps.plant.models import Line
from apps.plant.services import demo_plant_seed


class Command(BaseCommand):
    help = "Create the demo plant (lines, machines, sensors, demo users). Safe to run again."

    def add_arguments(self, parser):
        parser.add_argument("--lines", type=int, default=3)
        parser.add_argument("--machines-per-line", type=int, default=4)
        parser.add_argument("--sensors", type=int, default=120, help="sensors per machine")
        parser.add_argument(
            "--if-empty", action="store_true", help="do nothing when the plant already has lines"
        )

    def handle(self, *args, lines, machines_per_line, sensors, if_empty, **options):
        if if_empty and Line.objects.exists():
            self.stdout.write("The plant already has lines; leaving it as it is.")
            return
        if min(lines, machines_per_line, sensors) < 1 or lines > 99 or sensors < 2:
            self.stderr.write("Need 1-99 lines, at least 1 machine per line and 2 sensors.")
            raise SystemExit(2)
        created = demo_plant_seed(
            lines=lines,
            machines_per_line=machines_per_line,
            sensors=sensors,
            password=settings.FLEETOPS_DEMO_PASSWORD,
        )
        self.stdout.write(
            self.style.SUCCESS(
                "Demo plant ready: created {lines} lines, {machines} machines, "
                "{sensors} sensors, {users} users.".format(**created)
            )
        )
