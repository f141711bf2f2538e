from celery import shared_task
from django.template.loader import render_to_string

from apps.plant.models import Machine

from .push import push_fragment


@shared_task(ignore_result=True)
def push_machine_rows(machine_ids: list[int]) -> int:
    """Render each machine's row once and push it to its line's topic."""
    pushed = 0
    for machine in Machine.objects.select_related("line").filter(pk__in=machine_ids):
        html = render_to_string(
            "plant/line_detail.html#machine_row", {"machine": machine, "oob": True}
        )
        push_fragment(topic=machine.line.topic, html=html)
        pushed += 1
    return pushed
