"""What the workbook benchmarks share: the plant and the setpoint sheets
they upload, and the child processes each figure runs in (so its peak
memory is its own: VmHWM reset through /proc/self/clear_refs before the
run, which counts calamine's Rust allocations that tracemalloc would miss).
"""

import json
import subprocess
import sys
import time
from pathlib import Path

from bench._support import ROOT, child_env, fast_hashers

MODES = ("RUN", "IDLE", "MAINTENANCE")


def plant_seed(machines: int) -> list[str]:
    """Seed `machines` machines (100 a line, 2 sensors each); their codes."""
    from apps.plant.models import Machine
    from apps.plant.services import demo_plant_seed

    t0 = time.perf_counter()
    per_line = min(100, machines)
    with fast_hashers():
        demo_plant_seed(
            lines=-(-machines // per_line), machines_per_line=per_line, sensors=2, password="bench"
        )
    codes = list(Machine.objects.order_by("code").values_list("code", flat=True))[:machines]
    print(f"  seeded {len(codes)} machines ({time.perf_counter() - t0:.1f} s)", flush=True)
    return codes


def setpoint_workbook_write(path: Path, size: int, codes: list[str]) -> None:
    """A template-shaped sheet of `size` rows cycling over `codes`."""
    from openpyxl import Workbook

    workbook = Workbook(write_only=True)
    sheet = workbook.create_sheet("Setpoints")
    sheet.append(["Machine ID", "Target Speed", "Mode"])
    for n in range(size):
        sheet.append([codes[n % len(codes)], (n * 7) % 3001, MODES[n % 3]])
    workbook.save(path)


def child_figure(module: str, *args, workbook_max_rows: int) -> dict:
    """Run `python -m module args...` in the bench database; its last line
    of output, as JSON."""
    done = subprocess.run(
        [sys.executable, "-m", module, *map(str, args)],
        cwd=ROOT,
        env=child_env(WORKBOOK_MAX_ROWS=workbook_max_rows, LOG_LEVEL="ERROR"),
        capture_output=True,
        text=True,
        timeout=900,
    )
    if done.returncode != 0:
        raise RuntimeError(f"bench child {module} {args[:1]} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def rss_mb(field: str) -> float:
    """VmRSS, VmHWM... of this process, in MB."""
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {field} in /proc/self/status")


def peak_rss_reset() -> float:
    """Reset the peak RSS (VmHWM) to the current RSS; returns the RSS."""
    with open("/proc/self/clear_refs", "w") as handle:
        handle.write("5")
    return rss_mb("VmRSS")
