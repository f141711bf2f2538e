"""The demo plant in motion: machines that ramp, stop and fault, and
sensors that drift, jitter and now and then spike around their nominal value.

Pure and deterministic for a given seed: `Simulator.step(t)` advances the
plant to `t` seconds after start and returns the frames of that instant.

What it simulates comes from the server (plant.py): machine codes and each
sensor's key, unit and alert limits. The physics is the device's own: the
rated speed, which sensor families follow the load, what a "speed" sensor
reads, and the states and modes the machine's controller knows.
"""

import random
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

STATUSES = (
    "RUNNING",
    "IDLE",
    "STOPPED",
    "EMERGENCY_STOP",
    "FAULT",
    "MAINTENANCE_LOCK",
    "SAFETY_INTERLOCK",
)
MODES = ("RUN", "IDLE", "MAINTENANCE")
# A machine in one of these is held by its safety chain: no remote setpoint moves it.
CRITICAL_STATUSES = frozenset({"EMERGENCY_STOP", "FAULT", "MAINTENANCE_LOCK", "SAFETY_INTERLOCK"})

NOMINAL_SPEED = 1500.0  # rpm: the rated speed the machines' setpoints spread around
# Families whose value follows how hard the machine works (share at standstill).
LOAD_FOLLOWING = {"vibration": 0.1, "current": 0.08, "torque": 0.05, "temp": 0.55, "flow": 0.3}
DEFAULT_NOMINAL = 50.0  # for a sensor the server gives no limits

# A machine code in the --fault and --offline options, which also hold colons.
# The gateway's own copy of the shape (it imports nothing of the server); the
# codes it may use are the ones the server lists for its token.
MACHINE = r"m:[0-9]+"

# How fast the speed falls in each stopping status, as a multiple of the ramp rate.
STOP_RAMP = {"EMERGENCY_STOP": 20.0, "SAFETY_INTERLOCK": 20.0, "FAULT": 4.0}


def sensor_family(key: str) -> str:
    """temp_03 -> temp; speed -> speed."""
    return re.sub(r"_\d+$", "", key)


@dataclass(frozen=True)
class SensorSpec:
    """A sensor as the server configures it (`GET /api/v1/gateway`)."""

    key: str
    unit: str = ""
    low_alert: float | None = None
    high_alert: float | None = None

    @property
    def nominal(self) -> float:
        """Where a healthy sensor reads: well inside its alert limits, so the
        demo raises alerts on spikes and faults, not all the time."""
        low, high = self.low_alert, self.high_alert
        if low is not None and high is not None:
            return (low + high) / 2
        if high is not None:
            return high / 2
        if low is not None:
            return low * 4
        return DEFAULT_NOMINAL


@dataclass
class SensorSignal:
    """A nominal value with a slow mean-reverting drift, noise and rare spikes."""

    key: str
    nominal: float
    bias: float  # a per-sensor offset (fraction of nominal): no two sensors read the same
    drift: float = 0.0
    noise: float = 0.01
    drift_step: float = 0.002
    drift_limit: float = 0.05
    spike_chance: float = 0.002
    spike_size: tuple[float, float] = (0.15, 0.3)

    def sample(self, rng: random.Random, load: float) -> float:
        self.drift += rng.gauss(0, self.drift_step) - 0.02 * self.drift
        self.drift = max(-self.drift_limit, min(self.drift_limit, self.drift))
        level = self.nominal
        rest = LOAD_FOLLOWING.get(sensor_family(self.key))
        if rest is not None:
            level *= rest + (1 - rest) * load
        value = level * (1 + self.bias + self.drift + rng.gauss(0, self.noise))
        if rng.random() < self.spike_chance:
            value += self.nominal * rng.uniform(*self.spike_size)
        return max(0.0, round(value, 3))


@dataclass
class MachineState:
    code: str
    sensors: list[SensorSignal]
    status: str = "RUNNING"
    mode: str = "RUN"
    speed: float = 0.0
    target_speed: float = NOMINAL_SPEED
    ramp_rate: float = 150.0  # rpm per second

    @property
    def effective_target(self) -> float:
        return self.target_speed if self.status == "RUNNING" else 0.0

    def set_status(self, status: str) -> None:
        if status not in STATUSES:
            raise ValueError(f"unknown status {status!r}")
        self.status = status
        if status == "RUNNING":
            self.mode = "RUN"
        elif status == "IDLE":
            self.mode = "IDLE"
        elif status == "MAINTENANCE_LOCK":
            self.mode = "MAINTENANCE"
        # A stop, a fault or an e-stop leaves the mode selector where it was.

    def set_mode(self, mode: str) -> None:
        """The mode selector, turned remotely: RUN starts an idle or stopped machine,
        IDLE idles a running one, MAINTENANCE stops it. Never a critical status."""
        if mode not in MODES:
            raise ValueError(f"unknown mode {mode!r}")
        if self.status in CRITICAL_STATUSES:
            raise ValueError(f"machine in {self.status}")
        self.mode = mode
        if mode == "RUN":
            self.status = "RUNNING"
        elif mode == "IDLE":
            self.status = "IDLE"
        elif self.status in ("RUNNING", "IDLE"):
            self.status = "STOPPED"

    def advance(self, dt: float) -> None:
        rate = self.ramp_rate * STOP_RAMP.get(self.status, 1.0)
        step = rate * dt
        target = self.effective_target
        if self.speed < target:
            self.speed = min(target, self.speed + step)
        else:
            self.speed = max(target, self.speed - step)


@dataclass(frozen=True)
class Fault:
    machine: str
    status: str
    at: float

    @classmethod
    def parse(cls, spec: str) -> "Fault":
        """m:402:EMERGENCY_STOP@20"""
        match = re.fullmatch(rf"({MACHINE}):([A-Z_]+)@(\d+(?:\.\d+)?)", spec.strip())
        if not match or match[2] not in STATUSES:
            raise ValueError(
                f"bad fault {spec!r}: expected MACHINE:STATUS@SECONDS, "
                f"e.g. m:402:EMERGENCY_STOP@20, with STATUS one of {', '.join(STATUSES)}"
            )
        return cls(match[1], match[2], float(match[3]))


@dataclass(frozen=True)
class Window:
    """A stretch of time [start, start + duration), for a machine or the whole link."""

    start: float
    duration: float
    machine: str = ""

    def covers(self, t: float) -> bool:
        return self.start <= t < self.start + self.duration

    @classmethod
    def parse_machine(cls, spec: str) -> "Window":
        """m:401:30 (offline 30 s from the start) or m:401:30@10 (from t=10 s)."""
        match = re.fullmatch(rf"({MACHINE}):(\d+(?:\.\d+)?)(?:@(\d+(?:\.\d+)?))?", spec.strip())
        if not match:
            raise ValueError(f"bad offline window {spec!r}: expected m:401:30 or m:401:30@10")
        return cls(float(match[3] or 0), float(match[2]), match[1])

    @classmethod
    def parse_link(cls, spec: str) -> "Window":
        """30 (link down for the first 30 s) or 30@10 (down from t=10 s for 30 s)."""
        match = re.fullmatch(r"(\d+(?:\.\d+)?)(?:@(\d+(?:\.\d+)?))?", spec.strip())
        if not match:
            raise ValueError(f"bad link window {spec!r}: expected SECONDS or SECONDS@START")
        return cls(float(match[2] or 0), float(match[1]))


def _machine(code: str, specs, rng: random.Random, ramp_rate: float) -> MachineState:
    specs = [SensorSpec(spec) if isinstance(spec, str) else spec for spec in specs]
    sensors = [
        SensorSignal(key=spec.key, nominal=spec.nominal, bias=rng.uniform(-0.03, 0.03))
        for spec in specs
    ]
    # Machines run at different setpoints: 1200-1800 rpm in steps of 100.
    target = NOMINAL_SPEED + 100 * rng.randint(-3, 3)
    return MachineState(code=code, sensors=sensors, target_speed=target, ramp_rate=ramp_rate)


def _kept_signals(old: list[SensorSignal], new: list[SensorSignal]) -> list[SensorSignal]:
    """The new sensor list, where a sensor with the same key and nominal keeps its drift."""
    same = {(s.key, s.nominal): s for s in old}
    return [same.get((s.key, s.nominal), s) for s in new]


def iso_ms(moment: datetime) -> str:
    moment = moment.astimezone(UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


@dataclass
class Simulator:
    machines: list[MachineState]
    started_at: datetime
    faults: list[Fault] = field(default_factory=list)
    offline: list[Window] = field(default_factory=list)
    seed: int | None = None
    t: float = 0.0

    def __post_init__(self):
        self.rng = random.Random(self.seed)
        self._pending = sorted(self.faults, key=lambda f: f.at)
        self.by_code = {m.code: m for m in self.machines}
        unknown = {f.machine for f in self.faults} | {w.machine for w in self.offline}
        unknown -= set(self.by_code)
        if unknown:
            raise ValueError(
                f"fault/offline for machine(s) not simulated: {', '.join(sorted(unknown))}"
            )

    @classmethod
    def build(
        cls,
        machine_sensors: dict[str, list[SensorSpec | str]],
        *,
        started_at: datetime | None = None,
        ramp_rate: float = 150.0,
        seed: int | None = None,
        faults=(),
        offline=(),
    ) -> "Simulator":
        """Machines from machine code -> sensors (a bare key is a sensor without limits)."""
        rng = random.Random(seed)
        return cls(
            machines=[
                _machine(code, specs, rng, ramp_rate) for code, specs in machine_sensors.items()
            ],
            started_at=started_at or datetime.now(UTC),
            faults=list(faults),
            offline=list(offline),
            seed=seed,
        )

    def replan(self, machine_sensors: dict[str, list[SensorSpec | str]]) -> None:
        """Simulate this machine set from now on (the server's plant changed).

        A machine still listed keeps its status, speed and setpoints, with
        its sensors as now listed; a new one starts like at build; a machine
        no longer listed stops reporting, and its scheduled faults with it.
        """
        ramp_rate = self.machines[0].ramp_rate if self.machines else 150.0
        machines = []
        for code, specs in machine_sensors.items():
            fresh = _machine(code, specs, self.rng, ramp_rate)
            if kept := self.by_code.get(code):
                kept.sensors = _kept_signals(kept.sensors, fresh.sensors)
                fresh = kept
            machines.append(fresh)
        self.machines = machines
        self.by_code = {m.code: m for m in machines}
        self._pending = [f for f in self._pending if f.machine in self.by_code]

    def is_offline(self, code: str, t: float) -> bool:
        return any(w.machine == code and w.covers(t) for w in self.offline)

    def set_target_speed(self, code: str, value: float) -> None:
        """A setpoint from the server: the speed ramps toward it at the ramp rate."""
        self.by_code[code].target_speed = float(value)

    def set_mode(self, code: str, mode: str) -> None:
        self.by_code[code].set_mode(mode)

    def step(self, t: float) -> list[dict]:
        """Advance to `t` seconds after start; frames of the machines that are online."""
        dt = max(0.0, t - self.t)
        self.t = t
        while self._pending and self._pending[0].at <= t:
            fault = self._pending.pop(0)
            self.by_code[fault.machine].set_status(fault.status)
        ts = iso_ms(self.started_at + timedelta(seconds=t))
        frames = []
        for machine in self.machines:
            machine.advance(dt)
            # The plant keeps moving while a machine is unreachable; only its reports stop.
            readings = self._readings(machine)
            if self.is_offline(machine.code, t):
                continue
            frames.append(
                {
                    "machine": machine.code,
                    "ts": ts,
                    "status": machine.status,
                    "speed": round(machine.speed),
                    "target_speed": round(machine.target_speed),
                    "mode": machine.mode,
                    "readings": readings,
                }
            )
        return frames

    def _readings(self, machine: MachineState) -> dict[str, float]:
        load = min(1.5, machine.speed / NOMINAL_SPEED)
        readings = {}
        for sensor in machine.sensors:
            if sensor_family(sensor.key) == "speed":
                jitter = self.rng.gauss(0, 0.002) if machine.speed else 0.0
                readings[sensor.key] = round(max(0.0, machine.speed * (1 + jitter)), 1)
            else:
                readings[sensor.key] = sensor.sample(self.rng, load)
        return readings
