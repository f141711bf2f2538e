"""Topics the browser subscribes to, how often each is refreshed, and who
may see them.

A topic is named in the plant's words: `dashboard:global`, `line:01`,
`m:401`, and `chart:m:401:temp` for one sensor's chart on a machine page,
`upload:12` for a workbook upload's page. Who may see one is asked of the
app that owns it, imported where it is asked (see regions.py).
"""

import re
from dataclasses import dataclass

GLOBAL = "dashboard:global"
_LINE_RE = re.compile(r"^line:(\d{2,4})$")
_MACHINE_RE = re.compile(r"^m:\d+$")
_CHART_RE = re.compile(r"^chart:(m:\d+):([a-z][a-z0-9_]{0,63})$")
_UPLOAD_RE = re.compile(r"^upload:(\d{1,12})$")


@dataclass(frozen=True, slots=True)
class Topic:
    name: str
    kind: str  # "global" | "line" | "machine" | "chart" | "upload"
    key: str  # line code, machine code, or "" for the global view
    sensor: str = ""

    @property
    def period(self) -> float:
        """Seconds between ticks: changes are gathered for this long."""
        return {"global": 5.0, "line": 1.0, "machine": 0.25, "chart": 2.0, "upload": 0.5}[self.kind]

    @property
    def sweep(self) -> float:
        """Seconds between full re-renders even without a change event, so
        staleness shows and a lost event cannot freeze a screen."""
        return {"global": 5.0, "line": 1.0, "machine": 1.0, "chart": 5.0, "upload": 2.0}[self.kind]


def parse(name: str) -> Topic | None:
    if name == GLOBAL:
        return Topic(name, "global", "")
    if match := _LINE_RE.match(name):
        return Topic(name, "line", match.group(1))
    if _MACHINE_RE.match(name):
        return Topic(name, "machine", name)
    if match := _CHART_RE.match(name):
        return Topic(name, "chart", match.group(1), match.group(2))
    if match := _UPLOAD_RE.match(name):
        return Topic(name, "upload", match.group(1))
    return None


def visible_line_codes(*, user) -> frozenset[str]:
    from apps.plant import selectors as plant

    return frozenset(plant.line_list_for_user(user=user).values_list("code", flat=True))


def topic_allowed(*, user, topic: str) -> bool:
    """May `user` watch `topic`? Unknown topics are refused like forbidden ones."""
    from apps.plant import selectors as plant
    from apps.plant.models import Line, Machine
    from apps.workbooks.live import upload_topic_allowed

    parsed = parse(topic)
    if parsed is None or not getattr(user, "is_authenticated", False):
        return False
    if parsed.kind == "global":
        return True
    if parsed.kind == "line":
        line = Line.objects.filter(code=parsed.key).first()
        return line is not None and plant.line_can_view(user=user, line=line)
    if parsed.kind == "upload":
        return upload_topic_allowed(user, parsed.key)
    machine = Machine.objects.select_related("line").filter(code=parsed.key).first()
    return machine is not None and plant.line_can_view(user=user, line=machine.line)
