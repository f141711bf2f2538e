import stat
from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from apps.audit.models import AuditEvent
from apps.plant.models import Gateway
from apps.plant.selectors import gateway_for_token
from apps.plant.services import gateway_issue


def issue(settings, tmp_path) -> tuple[str, str]:
    settings.VAR_DIR = tmp_path
    out = StringIO()
    call_command("issue_demo_gateway", stdout=out)
    return out.getvalue(), (tmp_path / "edge" / "simulator.token").read_text().strip()


def test_it_writes_a_token_for_every_machine_readable_by_its_owner_only(plant, settings, tmp_path):
    out, token = issue(settings, tmp_path)
    gateway = gateway_for_token(token=token)
    assert gateway.name == "simulator" and gateway.machines.count() == 12
    path = tmp_path / "edge" / "simulator.token"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert str(path) in out and token not in out  # the token only goes to the file
    assert AuditEvent.objects.filter(action="gateway_issue").count() == 1


def test_it_revokes_the_previous_demo_token(plant, settings, tmp_path):
    old, old_token = gateway_issue(name="simulator", machines=[plant.machines["m:401"]])
    _out, token = issue(settings, tmp_path)
    old.refresh_from_db()
    assert old.revoked_at is not None and old.name == f"simulator-revoked-{old.pk}"
    assert gateway_for_token(token=old_token) is None
    assert token != old_token and gateway_for_token(token=token).name == "simulator"
    assert Gateway.objects.filter(name="simulator").count() == 1


def test_it_tightens_a_token_file_left_readable_by_others(plant, settings, tmp_path):
    path = tmp_path / "edge" / "simulator.token"
    path.parent.mkdir()
    path.write_text("fo_old\n")
    path.chmod(0o644)
    _out, token = issue(settings, tmp_path)
    assert token != "fo_old" and stat.S_IMODE(path.stat().st_mode) == 0o600


def test_it_refuses_an_empty_plant(db, settings, tmp_path):
    with pytest.raises(CommandError, match="seed_demo_plant"):
        issue(settings, tmp_path)
    assert not (tmp_path / "edge" / "simulator.token").exists()
