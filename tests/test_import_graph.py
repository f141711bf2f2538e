"""No import cycle between apps, counting imports made inside functions
too: a module of one app never ends up importing itself through another
app. (The live layer reads the domain apps late, in its functions, and the
domain apps call only apps/live/push.py, which imports nothing of the
project: that is what keeps this true.)"""

import ast
from pathlib import Path

APPS = Path(__file__).resolve().parent.parent / "apps"


def _modules() -> dict[str, Path]:
    modules = {}
    for path in APPS.rglob("*.py"):
        if "migrations" in path.parts:
            continue
        parts = path.relative_to(APPS.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        if name != "apps":  # the namespace itself belongs to no app
            modules[name] = path
    return modules


def _imports(name: str, path: Path, modules) -> set[str]:
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        targets = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parts, base] if base else parts)
            targets = [base, *(f"{base}.{alias.name}" for alias in node.names)]
        for target in targets:
            while target and target not in modules:
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    return found


def _cross_app_cycles(graph) -> list[list[str]]:
    """Strongly connected groups of modules spanning more than one app."""
    index, low, stack, on_stack, groups = {}, {}, [], set(), []

    def visit(node):
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for other in graph.get(node, ()):
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in on_stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == node:
                    break
            if len({m.split(".")[1] for m in group}) > 1:
                groups.append(sorted(group))

    for node in graph:
        if node not in index:
            visit(node)
    return groups


def test_no_module_of_one_app_imports_itself_back_through_another_app():
    modules = _modules()
    graph = {name: _imports(name, path, modules) for name, path in modules.items()}
    assert _cross_app_cycles(graph) == []


def test_the_cycle_check_finds_a_cycle_between_two_apps():
    graph = {"apps.a.x": {"apps.b.y"}, "apps.b.y": {"apps.a.x"}, "apps.a.z": set()}
    assert _cross_app_cycles(graph) == [["apps.a.x", "apps.b.y"]]


def test_apps_live_push_imports_nothing_of_the_project():
    modules = _modules()
    assert _imports("apps.live.push", modules["apps.live.push"], modules) == set()
