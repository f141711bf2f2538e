"""Which way the dependencies run: every domain app may import `push`, so
`push` must import none of them (nor any model), and the live layer
imports no other app at module import time (it reads through their
selectors when it renders). Each check imports in a fresh interpreter,
without django.setup(), so nothing the test session loaded can hide an
import."""

import json
import subprocess
import sys

from django.conf import settings

REPORT = """
import json, sys
print(json.dumps({
    "apps": sorted(m for m in sys.modules if m.startswith("apps.")),
    "models": "django.db.models" in sys.modules,
}))
"""


def loaded_by(*modules: str) -> dict:
    """What importing `modules` pulls in: project modules, and whether Django's ORM."""
    result = subprocess.run(
        [sys.executable, "-c", f"import {', '.join(modules)}\n{REPORT}"],
        cwd=settings.BASE_DIR,
        env={"DJANGO_SETTINGS_MODULE": "fleetops.settings"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_push_imports_no_other_module_of_the_project_and_no_model():
    assert loaded_by("apps.live.push") == {"apps": ["apps.live", "apps.live.push"], "models": False}


def test_the_live_layer_imports_no_other_app_when_loaded():
    loaded = loaded_by("apps.live.consumers", "apps.live.routing")
    assert [m for m in loaded["apps"] if not m.startswith("apps.live")] == []
