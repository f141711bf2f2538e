"""Who may import whom (ARCHITECTURE.md): the domain apps never import the
UI side, and the gateway agent reaches the server only over the wire.

Read from the source with `ast`, so an import inside a function counts too."""

import ast
from pathlib import Path

import pytest

APPS = Path(__file__).resolve().parents[2] / "apps"
DOMAIN_APPS = ["plant", "telemetry", "control", "workbooks", "audit"]


def imported_modules(app: str) -> set[tuple[str, str]]:
    """(file, module) for every absolute import in the app's Python files."""
    found = set()
    for path in (APPS / app).rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
            else:
                continue
            found.update((str(path.relative_to(APPS)), name) for name in names)
    return found


@pytest.mark.parametrize("app", DOMAIN_APPS)
def test_no_domain_app_imports_the_ui_side(app):
    wrong = sorted(
        (path, name)
        for path, name in imported_modules(app)
        if name == "apps.dashboard" or name.startswith("apps.dashboard.")
    )
    assert wrong == []

