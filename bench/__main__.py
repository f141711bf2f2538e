"""`make bench`: run every benchmark module in bench/ and print each figure
beside its same-run baseline.

    python -m bench [--json FILE] [names]

`names` picks the modules whose name contains any of them; `--json` also
writes every row to FILE (see bench/report.py), rewritten after each module
so a run that dies half-way keeps what it measured.

Each module `bench/bench_*.py` exposes `run() -> list[Row]`.
"""

import argparse
import importlib
import os
import pkgutil
import sys
from pathlib import Path

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "fleetops.settings")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main(selected: list[str], json_path: Path | None = None) -> int:
    import django

    django.setup()
    from bench.report import print_rows, write_json

    names = sorted(
        m.name
        for m in pkgutil.iter_modules([str(Path(__file__).parent)])
        if m.name.startswith("bench_")
    )
    if selected:
        names = [n for n in names if any(s in n for s in selected)]
    if not names:
        print(f"No benchmark named like {' or '.join(selected)}." if selected else "No benchmarks.")
        return 0
    results = []
    for name in names:
        module = importlib.import_module(f"bench.{name}")
        bench = name.removeprefix("bench_")
        print(f"\n## {bench}\n", flush=True)
        rows = module.run()
        print_rows(rows)
        results.append((bench, rows))
        if json_path is not None:
            write_json(json_path, results)
    return 0


def _arguments(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench")
    parser.add_argument("--json", type=Path, metavar="FILE", help="also write the rows here")
    parser.add_argument("names", nargs="*", help="run only modules whose name contains one")
    return parser.parse_args(argv)


if __name__ == "__main__":
    arguments = _arguments(sys.argv[1:])
    sys.exit(main(arguments.names, json_path=arguments.json))
