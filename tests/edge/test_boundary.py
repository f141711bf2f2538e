"""The gateway agent reaches the server only over HTTP and WebSocket: no
module under apps/edge may import a server app (`apps.plant`,
`apps.telemetry`, `apps.control`, ...), or the agent would only run beside
the server's database."""

import ast
from pathlib import Path

import apps.edge

EDGE = Path(apps.edge.__file__).parent


def imported_modules(source: str, package: str) -> set[str]:
    """Absolute names of everything `source` imports, relative imports resolved
    against `package` and `from x import y` counted as `x.y` too."""
    names = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            module = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join([*parts, module] if module else parts)
            names.add(module)
            names.update(f"{module}.{alias.name}" for alias in node.names)
    return names


def edge_modules():
    for path in sorted(EDGE.rglob("*.py")):
        package = ".".join(["apps", "edge", *path.relative_to(EDGE).parent.parts])
        yield path.relative_to(EDGE), imported_modules(path.read_text(), package)


def test_no_edge_module_imports_a_server_app():
    offending = {
        str(path): sorted(
            n
            for n in names
            if n.startswith("apps.") and n != "apps.edge" and not n.startswith("apps.edge.")
        )
        for path, names in edge_modules()
    }
    assert {path: names for path, names in offending.items() if names} == {}


def test_the_check_resolves_relative_and_from_imports():
    # What a shortcut back into the server would look like, in each form.
    package = "apps.edge.management.commands"
    assert "apps.plant.models" in imported_modules("import apps.plant.models", package)
    assert "apps.plant" in imported_modules("from apps import plant", package)
    assert "apps.plant.models" in imported_modules("from ....plant import models", package)
    assert "apps.edge.queue" in imported_modules("from ...queue import OfflineQueue", package)
