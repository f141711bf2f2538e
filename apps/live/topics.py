"""Topics the browser subscribes to, and who may see them.

A topic is named in the plant's words (`dashboard:global`, `line:01`,
`m:401`); Channels group names may not hold a colon, so each topic maps
to a group name here and nowhere else.
"""

import re

from apps.plant import selectors as plant
from apps.plant.models import Line, Machine

GLOBAL = "dashboard:global"
_LINE_RE = re.compile(r"^line:(\d{2,4})$")
_MACHINE_RE = re.compile(r"^m:\d+$")


def group_name(topic: str) -> str:
    return "topic." + topic.replace(":", ".")


def topic_allowed(*, user, topic: str) -> bool:
    """May `user` watch `topic`? Unknown topics are refused like forbidden ones."""
    if not getattr(user, "is_authenticated", False):
        return False
    if topic == GLOBAL:
        return True
    if match := _LINE_RE.match(topic):
        line = Line.objects.filter(code=match.group(1)).first()
        return line is not None and plant.line_can_view(user=user, line=line)
    if _MACHINE_RE.match(topic):
        machine = Machine.objects.select_related("line").filter(code=topic).first()
        return machine is not None and plant.line_can_view(user=user, line=machine.line)
    return False
