import re

import pytest

from apps.edge.simulator import MODES, STATUSES, Fault, SensorSpec, Simulator, Window

from .support import T0

KEYS = [
    "speed",
    "temp",
    "vibration",
    "pressure_01",
    "current_01",
    "voltage_01",
    "flow_01",
    "humidity_01",
    "torque_01",
    "mystery",
]


def run(sim, seconds, rate=1):
    return [sim.step(i / rate) for i in range(1, seconds * rate + 1)]


def test_it_emits_frames_in_the_shape_of_the_contract():
    sim = Simulator.build({"m:401": KEYS}, started_at=T0, seed=1)
    (frame,) = sim.step(1.5)
    assert set(frame) == {"machine", "ts", "status", "speed", "target_speed", "mode", "readings"}
    assert frame["machine"] == "m:401"
    assert frame["ts"] == "2026-11-23T10:00:01.500Z"
    assert frame["status"] in STATUSES and frame["mode"] in MODES
    assert list(frame["readings"]) == KEYS
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", frame["ts"])


# As the server configures them: both limits, only a high one, only a low one, none.
SPECS = [
    SensorSpec("speed", "rpm", None, 3100.0),
    SensorSpec("temp", "°C", 5.0, 95.0),
    SensorSpec("vibration", "mm/s", None, 7.1),
    SensorSpec("pressure_01", "bar", 1.0, 9.0),
    SensorSpec("current_01", "A", None, 40.0),
    SensorSpec("voltage_01", "V", 360.0, 440.0),
    SensorSpec("flow_01", "l/min", 5.0, None),
    SensorSpec("humidity_01", "%", None, 80.0),
    SensorSpec("torque_01", "N·m", None, 250.0),
    SensorSpec("mystery"),
]


def test_it_reads_inside_the_alert_limits_the_server_configured():
    sim = Simulator.build({"m:401": SPECS}, started_at=T0, seed=2)
    steady = run(sim, 300)[-100:]  # at speed by now
    for spec in SPECS[1:]:
        series = [frames[0]["readings"][spec.key] for frames in steady]
        mean = sum(series) / len(series)
        assert spec.low_alert is None or mean > spec.low_alert, spec
        assert spec.high_alert is None or mean < spec.high_alert, spec


def test_it_keeps_readings_within_plausible_bounds_of_their_nominal():
    specs = {spec.key: spec for spec in SPECS}
    sim = Simulator.build({f"m:{400 + i}": SPECS for i in range(1, 5)}, started_at=T0, seed=2)
    values = {}
    for frames in run(sim, 300):
        for frame in frames:
            for key, value in frame["readings"].items():
                values.setdefault(key, []).append(value)
    for key, series in values.items():
        if key == "speed":
            continue
        nominal = specs[key].nominal
        assert min(series) >= 0, key
        assert max(series) <= 1.5 * nominal, key
        steady = series[-100:]  # all machines at speed by now
        mean = sum(steady) / len(steady)
        assert 0.85 * nominal <= mean <= 1.15 * nominal, key
        assert len(set(series)) > 50, f"{key} does not move"


def test_it_ramps_speed_toward_the_target_and_reports_it_as_the_speed_reading():
    sim = Simulator.build({"m:401": ["speed", "temp"]}, started_at=T0, ramp_rate=100, seed=3)
    sim.set_target_speed("m:401", 1500)
    speeds = [frames[0]["speed"] for frames in run(sim, 20)]
    assert speeds[:3] == [100, 200, 300]
    assert speeds == sorted(speeds)
    assert speeds[-1] == 1500 and speeds.count(1500) == 6
    frame = sim.step(21)[0]
    assert frame["readings"]["speed"] == pytest.approx(1500, rel=0.01)
    assert frame["target_speed"] == 1500


def test_it_injects_a_fault_at_its_scheduled_time():
    faults = [Fault.parse("m:402:EMERGENCY_STOP@20"), Fault.parse("m:401:FAULT@25")]
    sim = Simulator.build(
        {"m:401": ["speed"], "m:402": ["speed"]}, started_at=T0, seed=4, faults=faults
    )
    timeline = {t: {f["machine"]: f for f in sim.step(t)} for t in range(1, 31)}
    assert timeline[19]["m:402"]["status"] == "RUNNING"
    assert timeline[20]["m:402"]["status"] == "EMERGENCY_STOP"
    assert timeline[21]["m:402"]["speed"] == 0  # an e-stop brakes hard
    assert timeline[24]["m:401"]["status"] == "RUNNING"
    assert timeline[25]["m:401"]["status"] == "FAULT"
    assert timeline[30]["m:401"]["speed"] < timeline[24]["m:401"]["speed"]
    assert timeline[30]["m:402"]["mode"] == "RUN"


def test_it_silences_an_offline_machine_for_its_window_only():
    sim = Simulator.build(
        {"m:401": ["temp"], "m:402": ["temp"]},
        started_at=T0,
        offline=[Window.parse_machine("m:401:5@3")],
    )
    seen = [[f["machine"] for f in frames] for frames in run(sim, 10)]
    assert seen[1] == ["m:401", "m:402"]  # t=2
    assert all(s == ["m:402"] for s in seen[2:7])  # t=3..7
    assert seen[7] == ["m:401", "m:402"]  # t=8


def test_it_refuses_malformed_specs():
    for bad in ("m:402:MELTDOWN@20", "402:FAULT@1", "m:402:FAULT"):
        with pytest.raises(ValueError):
            Fault.parse(bad)
    with pytest.raises(ValueError):
        Window.parse_machine("m:401")
    assert Window.parse_link("30@10") == Window(10, 30)
    with pytest.raises(ValueError, match="not simulated"):
        Simulator.build({"m:401": []}, faults=[Fault.parse("m:999:FAULT@1")])


def test_it_keeps_a_machines_state_when_the_plant_is_replanned():
    sim = Simulator.build({"m:401": ["speed", "temp"], "m:402": ["speed"]}, started_at=T0, seed=3)
    sim.set_target_speed("m:401", 2100)
    run(sim, 5)
    speed = sim.by_code["m:401"].speed
    sim.replan({"m:401": ["speed", "temp", "vibration"], "m:403": ["speed"]})
    kept = sim.by_code["m:401"]
    assert kept.speed == speed and kept.target_speed == 2100
    assert [s.key for s in kept.sensors] == ["speed", "temp", "vibration"]
    frames = sim.step(6)
    assert [f["machine"] for f in frames] == ["m:401", "m:403"]
    assert frames[1]["speed"] == 150  # a new machine ramps up from standstill


def test_it_drops_the_faults_of_a_machine_no_longer_simulated():
    sim = Simulator.build(
        {"m:401": ["speed"], "m:402": ["speed"]},
        started_at=T0,
        seed=3,
        faults=[Fault.parse("m:402:FAULT@3")],
    )
    sim.replan({"m:401": ["speed"]})
    assert [f["machine"] for f in sim.step(4)] == ["m:401"]
