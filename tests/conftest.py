import os
from dataclasses import dataclass, field

import pytest
from django.contrib.auth import get_user_model

from apps.plant.models import Line, Machine
from apps.plant.services import demo_plant_seed

PASSWORD = "fleetops-demo"
SERVICES_PROFILE = bool(os.environ.get("REDIS_URL"))


def pytest_report_header(config):
    profile = (
        "services (PostgreSQL + Redis)" if SERVICES_PROFILE else "embedded (SQLite, in-memory)"
    )
    return f"FleetOps Live test profile: {profile}"


def pytest_collection_modifyitems(config, items):
    # Tests that need the real services only run in the services profile;
    # the Makefile runs that profile right after this one.
    if SERVICES_PROFILE:
        return
    kept, deselected = [], []
    for item in items:
        (deselected if item.get_closest_marker("services") else kept).append(item)
    if deselected:
        config.hook.pytest_deselected(items=deselected)
        items[:] = kept


@dataclass
class Plant:
    lines: dict[str, Line] = field(default_factory=dict)
    machines: dict[str, Machine] = field(default_factory=dict)
    users: dict = field(default_factory=dict)


@pytest.fixture
def plant(db, settings) -> Plant:
    """The demo plant in small: lines 01-03, m:401-404/501-504/601-604,
    6 sensors each; operator1 operates line 01, viewer watches every line,
    outsider belongs to no line."""
    demo_plant_seed(lines=3, machines_per_line=4, sensors=6, password=PASSWORD)
    User = get_user_model()
    outsider, _ = User.objects.get_or_create(username="outsider")
    outsider.set_password(PASSWORD)
    outsider.save()
    return Plant(
        lines={line.code: line for line in Line.objects.all()},
        machines={m.code: m for m in Machine.objects.select_related("line")},
        users={u.username: u for u in User.objects.all()},
    )


@pytest.fixture
def operator1(plant):
    return plant.users["operator1"]


@pytest.fixture
def viewer(plant):
    return plant.users["viewer"]


@pytest.fixture
def outsider(plant):
    return plant.users["outsider"]


@pytest.fixture
def admin_user(plant):
    return plant.users["admin"]


@pytest.fixture
def client_for(client):
    def login(user):
        client.force_login(user)
        return client

    return login


@pytest.fixture(autouse=True)
def _fast_password_hashing(settings):
    # PBKDF2's cost is for production; the demo users are hashed per test.
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
