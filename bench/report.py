from dataclasses import dataclass


@dataclass
class Row:
    """One measured figure beside the baseline measured in the same run."""

    name: str
    value: float
    unit: str
    baseline_name: str = ""
    baseline: float | None = None
    target: str = ""
    higher_is_better: bool = True

    @property
    def ratio(self) -> str:
        if not self.baseline:
            return ""
        return f"{self.value / self.baseline:.2f}x"


def _fmt(value: float | None) -> str:
    if value is None:
        return ""
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    return f"{value:.3g}"


def print_rows(rows: list[Row]) -> None:
    print("| figure | value | baseline (same run) | ratio | target |")
    print("|---|---|---|---|---|")
    for r in rows:
        base = f"{r.baseline_name}: {_fmt(r.baseline)} {r.unit}" if r.baseline is not None else ""
        print(
            f"| {r.name} | {_fmt(r.value)} {r.unit} | {base} | {r.ratio} | {r.target} |", flush=True
        )
