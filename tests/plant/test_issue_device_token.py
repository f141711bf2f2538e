from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from apps.plant.models import Gateway
from apps.plant.selectors import gateway_for_token
from apps.plant.services import gateway_revoke


def issue(*args):
    out = StringIO()
    call_command("issue_device_token", *args, stdout=out)
    return out.getvalue().strip().splitlines()


def test_it_prints_the_token_as_the_last_line_and_stores_only_its_hash(plant):
    lines = issue("gw-7", "--machines", "m:401,m:402")
    token = lines[-1]
    assert token.startswith("fo_") and len(token) >= 40
    gateway = Gateway.objects.get(name="gw-7")
    assert set(gateway.machines.values_list("code", flat=True)) == {"m:401", "m:402"}
    assert token not in gateway.token_hash and gateway.token_hash == Gateway.hash_token(token)
    assert gateway_for_token(token=token) == gateway


def test_each_token_is_different(plant):
    assert issue("a", "--machines", "m:401")[-1] != issue("b", "--machines", "m:401")[-1]


def test_it_names_unknown_machines(plant):
    with pytest.raises(CommandError, match="Unknown machine.*m:999"):
        issue("gw", "--machines", "m:401,m:999")
    assert not Gateway.objects.exists()


def test_it_refuses_a_gateway_name_in_use(plant):
    issue("gw", "--machines", "m:401")
    with pytest.raises(CommandError, match="already exists"):
        issue("gw", "--machines", "m:402")


def test_a_revoked_or_unknown_token_finds_no_gateway(plant):
    token = issue("gw", "--machines", "m:401")[-1]
    gateway_revoke(gateway=Gateway.objects.get(name="gw"))
    assert gateway_for_token(token=token) is None
    assert gateway_for_token(token="fo_not-a-real-token") is None
    assert gateway_for_token(token="") is None
