"""bench/report.py: the rows `make bench` prints and writes as JSON, so
figures can be tracked from run to run (no benchmark runs here)."""

import json
import math

import pytest

from bench.report import Row, Target, at_least_times, at_most, below, print_rows, write_json

KEYS = {"bench", "figure", "value", "unit", "baseline", "baseline_value", "ratio"}
KEYS |= {"target", "comparison", "met"}


def rows() -> list[tuple[str, list[Row]]]:
    return [
        (
            "telemetry",
            [
                Row("ingest", 175_000.0, "readings/s", "COPY", 390_000.0,
                    at_least_times(0.25, 390_000.0, "COPY")),
                Row("chart p99", 362.0, "ms", "raw SQL p99", 184.0, below(50),
                    higher_is_better=False),
            ],
        ),
        ("live", [Row("python memory", 2.4, "MB")]),
    ]  # fmt: skip


def test_it_writes_one_record_per_row_with_its_bench_and_target(tmp_path):
    path = tmp_path / "var" / "bench.json"
    write_json(path, rows())
    ingest, chart, memory = json.loads(path.read_text())

    assert set(ingest) == set(chart) == set(memory) == KEYS
    assert ingest == {
        "bench": "telemetry",
        "figure": "ingest",
        "value": 175_000.0,
        "unit": "readings/s",
        "baseline": "COPY",
        "baseline_value": 390_000.0,
        "ratio": pytest.approx(175 / 390),
        "target": 97_500.0,  # 0.25x the same run's baseline, in the row's unit
        "comparison": ">=",
        "met": True,
    }
    assert (chart["target"], chart["comparison"], chart["met"]) == (50, "<", False)
    assert memory == {
        "bench": "live",
        "figure": "python memory",
        "value": 2.4,
        "unit": "MB",
        "baseline": None,
        "baseline_value": None,
        "ratio": None,
        "target": None,
        "comparison": None,
        "met": None,
    }


def test_it_writes_a_figure_that_came_out_nan_as_null_to_keep_the_file_json(tmp_path):
    path = tmp_path / "bench.json"
    write_json(path, [("live", [Row("p99 of nothing", math.nan, "ms", "bare", 0.0, below(1))])])
    (record,) = json.loads(path.read_text())  # strict JSON: NaN would not parse in most readers
    assert (record["value"], record["ratio"], record["baseline_value"]) == (None, None, 0.0)


def test_a_target_is_met_only_on_its_side_of_the_limit():
    assert at_most(0).met(0) and not at_most(0).met(1)
    assert below(1_100).met(1_099.9) and not below(1_100).met(1_100)
    assert at_least_times(30, None, "django-import-export") is None
    with pytest.raises(ValueError):
        Target("=<", 1)


def test_the_table_shows_each_target_with_a_tick_or_a_cross(capsys):
    print_rows(rows()[0][1])
    header, _rule, ingest, chart = capsys.readouterr().out.splitlines()
    assert header.endswith("| target | met |")
    assert "| 0.45x | ≥ 97,500 readings/s (0.25x COPY) | ✔ |" in ingest
    assert chart.endswith("| 1.97x | < 50 ms | ✘ |")


def test_the_command_line_takes_a_json_file_and_bench_names():
    from bench.__main__ import _arguments

    arguments = _arguments(["--json", "var/bench.json", "live", "workbooks"])
    assert (str(arguments.json), arguments.names) == ("var/bench.json", ["live", "workbooks"])
    assert _arguments([]).json is None
