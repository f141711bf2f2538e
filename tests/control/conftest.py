import pytest

from apps.live import push
from apps.plant.models import Machine


@pytest.fixture
def toasts(monkeypatch):
    """Notices sent to users: [(user_id, html)]."""
    sent = []
    monkeypatch.setattr(
        push, "toast_to_user", lambda *, user_id, html: sent.append((user_id, html))
    )
    return sent


@pytest.fixture
def report():
    """What a machine reports, as telemetry would set it."""

    def apply(code, **fields):
        Machine.objects.filter(code=code).update(**fields)
        return Machine.objects.select_related("line").get(code=code)

    return apply
