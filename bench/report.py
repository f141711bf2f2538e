"""The rows a benchmark returns, as a Markdown table and as JSON.

The JSON (`python -m bench --json FILE`) is a list with one object per row,
so figures can be tracked from run to run:

    {"bench": "telemetry", "figure": "...", "value": 175133.0,
     "unit": "readings/s", "baseline": "binary COPY ...",
     "baseline_value": 390318.0, "ratio": 0.449, "target": 97579.5,
     "comparison": ">=", "met": true}

`target` is in the row's unit (a target relative to the baseline, such as
">= 0.25x COPY", is turned into that unit with the same run's baseline);
`target`, `comparison` and `met` are null for a figure without one.
"""

import json
import math
import operator
from dataclasses import dataclass
from pathlib import Path

_COMPARE = {"<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge}
_SHOWN = {"<": "<", "<=": "≤", ">": ">", ">=": "≥"}


@dataclass(frozen=True)
class Target:
    """What a figure must reach: `value <comparison> limit`, in the row's
    unit. `basis` says how the limit was set when it is not a round figure
    of its own (e.g. "0.1x floor", "ramp 1,000 ms + 300 ms")."""

    comparison: str
    limit: float
    basis: str = ""

    def __post_init__(self):
        if self.comparison not in _COMPARE:
            raise ValueError(f"unknown comparison {self.comparison!r}")

    def met(self, value: float) -> bool:
        return _COMPARE[self.comparison](value, self.limit)


def below(limit: float, basis: str = "") -> Target:
    return Target("<", limit, basis)


def at_most(limit: float, basis: str = "") -> Target:
    return Target("<=", limit, basis)


def at_least(limit: float, basis: str = "") -> Target:
    return Target(">=", limit, basis)


def at_least_times(factor: float, baseline: float | None, name: str) -> Target | None:
    """At least `factor` times the same run's baseline; none without one."""
    if baseline is None:
        return None
    return Target(">=", factor * baseline, f"{factor:g}x {name}")


def at_most_times(factor: float, baseline: float | None, name: str) -> Target | None:
    """At most `factor` times the same run's baseline; none without one."""
    if baseline is None or not math.isfinite(baseline):
        return None
    return Target("<=", factor * baseline, f"{factor:g}x {name}")


@dataclass
class Row:
    """One measured figure beside the baseline measured in the same run."""

    name: str
    value: float
    unit: str
    baseline_name: str = ""
    baseline: float | None = None
    target: Target | None = None
    higher_is_better: bool = True

    @property
    def ratio(self) -> float | None:
        if not self.baseline:
            return None
        return self.value / self.baseline

    @property
    def met(self) -> bool | None:
        return None if self.target is None else self.target.met(self.value)


def _fmt(value: float | None) -> str:
    if value is None:
        return ""
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    return f"{value:.3g}"


def _target_text(row: Row) -> str:
    target = row.target
    if target is None:
        return ""
    text = f"{_SHOWN[target.comparison]} {_fmt(target.limit)} {row.unit}"
    return f"{text} ({target.basis})" if target.basis else text


def print_rows(rows: list[Row]) -> None:
    print("| figure | value | baseline (same run) | ratio | target | met |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        base = f"{r.baseline_name}: {_fmt(r.baseline)} {r.unit}" if r.baseline is not None else ""
        ratio = f"{r.ratio:.2f}x" if r.ratio is not None else ""
        met = {True: "✔", False: "✘", None: ""}[r.met]
        print(
            f"| {r.name} | {_fmt(r.value)} {r.unit} | {base} | {ratio} | {_target_text(r)} "
            f"| {met} |",
            flush=True,
        )


def _number(value: float | None) -> float | None:
    # NaN and infinities are not JSON; a figure that came out so is unknown.
    if value is None or not math.isfinite(value):
        return None
    return float(value)


def row_record(bench: str, row: Row) -> dict:
    target = row.target
    return {
        "bench": bench,
        "figure": row.name,
        "value": _number(row.value),
        "unit": row.unit,
        "baseline": row.baseline_name or None,
        "baseline_value": _number(row.baseline),
        "ratio": _number(row.ratio),
        "target": None if target is None else _number(target.limit),
        "comparison": None if target is None else target.comparison,
        "met": row.met,
    }


def write_json(path: Path, results: list[tuple[str, list[Row]]]) -> None:
    """Write every row of `results` ((bench name, its rows), in run order)
    to `path`, replacing what was there."""
    records = [row_record(bench, row) for bench, rows in results for row in rows]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(records, indent=2, ensure_ascii=False) + "\n")
