"""Settings read from the environment: an empty variable counts as unset, a
bad database URL fails naming the variable (each case in a fresh process,
since settings are read once per process)."""

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

PROBE = (
    "import django; django.setup(); from django.conf import settings as s; "
    "print(s.DATABASES['default']['ENGINE']); print(s.CHANNEL_LAYERS['default']['BACKEND'])"
)


def _run(code: str, **env: str) -> subprocess.CompletedProcess:
    environ = {**os.environ, "DJANGO_SETTINGS_MODULE": "fleetops.settings", **env}
    return subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=environ, capture_output=True, text=True
    )


def test_it_runs_the_embedded_database_when_database_url_is_empty():
    result = _run(PROBE, DATABASE_URL="", REDIS_URL="")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[0] == "django.db.backends.sqlite3"


def test_it_runs_the_in_memory_channel_layer_when_redis_url_is_empty():
    result = _run(PROBE, DATABASE_URL="", REDIS_URL="")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[1] == "channels.layers.InMemoryChannelLayer"


def test_it_refuses_a_database_url_with_an_unknown_scheme_naming_the_variable():
    result = _run(PROBE, DATABASE_URL="nonsense://db/x", REDIS_URL="")
    assert result.returncode != 0
    assert "DATABASE_URL has the unknown scheme 'nonsense'" in result.stderr


def test_it_refuses_a_database_url_that_is_no_url_naming_the_variable():
    result = _run(PROBE, DATABASE_URL="notaurl", REDIS_URL="")
    assert result.returncode != 0
    assert "DATABASE_URL is not a URL" in result.stderr
