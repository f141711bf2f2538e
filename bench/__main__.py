"""`make bench`: run every benchmark module in bench/ and print each figure
beside its same-run baseline.

Each module `bench/bench_*.py` exposes `run() -> list[Row]`.
"""

import importlib
import os
import pkgutil
import sys
from pathlib import Path

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "fleetops.settings")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main(selected: list[str]) -> int:
    import django

    django.setup()
    from bench.report import print_rows

    names = sorted(
        m.name
        for m in pkgutil.iter_modules([str(Path(__file__).parent)])
        if m.name.startswith("bench_")
    )
    if selected:
        names = [n for n in names if any(s in n for s in selected)]
    if not names:
        print("No benchmarks yet.")
        return 0
    for name in names:
        module = importlib.import_module(f"bench.{name}")
        print(f"\n## {name.removeprefix('bench_')}\n", flush=True)
        print_rows(module.run())
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
