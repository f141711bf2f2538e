import os
import signal
import threading
from datetime import UTC, datetime
from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from apps.edge.agent import Agent
from apps.edge.plant import GatewayPlant, PlantError, plant_select, plant_wait
from apps.edge.plant_cache import PlantCache, token_fingerprint
from apps.edge.plant_refresh import PlantRefresh
from apps.edge.queue import OfflineQueue
from apps.edge.sender import Backoff, HttpSender
from apps.edge.simulator import Fault, Simulator, Window

# `manage.py issue_demo_gateway` (a plant command, run on the server) writes
# the demo gateway's token here; `--demo` reads it.
DEMO_GATEWAY = "simulator"


def demo_token_file() -> Path:
    return settings.VAR_DIR / "edge" / f"{DEMO_GATEWAY}.token"


def _codes(value: str) -> list[str]:
    return [c.strip() for c in value.split(",") if c.strip()]


def _parsed(parse, specs):
    try:
        return [parse(spec) for spec in specs]
    except ValueError as exc:
        raise CommandError(str(exc)) from exc


class Command(BaseCommand):
    help = (
        "Run the edge gateway agent: ask the server which machines the token is bound to, "
        "simulate them at 1 Hz and deliver their frames through a durable offline queue."
    )

    def add_arguments(self, parser):
        parser.add_argument("--server", default="http://127.0.0.1:8000")
        parser.add_argument(
            "--token",
            default=os.environ.get("FLEETOPS_GATEWAY_TOKEN", ""),
            help="gateway token (default: $FLEETOPS_GATEWAY_TOKEN)",
        )
        parser.add_argument(
            "--token-file",
            default="",
            help="read the token from this file (kept off the command line and out of ps)",
        )
        parser.add_argument(
            "--demo",
            action="store_true",
            help=f"local development only: the token of gateway {DEMO_GATEWAY!r} that "
            f"`manage.py issue_demo_gateway` wrote to {demo_token_file()}",
        )
        parser.add_argument("--name", default="", help="gateway name used in batch ids")
        parser.add_argument("--machines", default="", help="only these, e.g. m:401,m:402")
        parser.add_argument("--sensors", type=int, default=None, help="at most N sensors each")
        parser.add_argument("--rate", type=float, default=1.0, help="frames/s per machine")
        parser.add_argument("--duration", type=float, default=None, help="seconds, then drain")
        parser.add_argument("--drain-timeout", type=float, default=60.0)
        parser.add_argument("--ramp-rate", type=float, default=150.0, help="rpm per second")
        parser.add_argument("--seed", type=int, default=None)
        parser.add_argument(
            "--offline",
            action="append",
            default=[],
            metavar="MACHINE:SECONDS[@START]",
            help="machine sends nothing for a while, e.g. m:401:30 or m:401:30@10",
        )
        parser.add_argument(
            "--link-offline",
            action="append",
            default=[],
            metavar="SECONDS[@START]",
            help="server unreachable for a while (frames keep queuing), e.g. 30@10",
        )
        parser.add_argument(
            "--fault",
            action="append",
            default=[],
            metavar="MACHINE:STATUS@SECONDS",
            help="e.g. m:402:EMERGENCY_STOP@20, m:403:FAULT@5, m:402:RUNNING@60",
        )
        parser.add_argument(
            "--queue", default="", help="queue file (default var/edge/NAME.sqlite3)"
        )
        parser.add_argument("--max-rows", type=int, default=50_000, help="queued batches at most")
        parser.add_argument("--drain-chunk", type=int, default=50, help="batches per queue read")
        parser.add_argument("--max-frames", type=int, default=500, help="frames per batch")
        parser.add_argument("--backoff-cap", type=float, default=30.0, help="seconds")
        parser.add_argument("--progress-every", type=float, default=2.0, help="seconds")
        parser.add_argument(
            "--plant-refresh",
            type=float,
            default=300.0,
            metavar="SECONDS",
            help="ask the server for the plant again this often and follow changes (0: never)",
        )
        commands = parser.add_mutually_exclusive_group()
        commands.add_argument(
            "--no-commands",
            action="store_true",
            help="do not open the command channel (no setpoints from the server)",
        )
        commands.add_argument(
            "--reject-commands",
            action="store_true",
            help="test mode: nack every command with 'rejected by gateway (test mode)'",
        )
        commands.add_argument(
            "--ignore-commands",
            action="store_true",
            help="test mode: receive commands but neither apply nor answer them (they expire)",
        )
        parser.add_argument(
            "--command-delay",
            type=float,
            default=0.0,
            metavar="SECONDS",
            help="wait this long before applying and acknowledging a command (default 0)",
        )
        parser.add_argument(
            "--show-quarantine",
            action="store_true",
            help="list the batches the server rejected, then exit",
        )

    def _command_channel(self, o, token: str):
        # Imported here so a gateway without the websockets package runs with --no-commands.
        try:
            from apps.edge.commands import CommandChannel, CommandMode
        except ImportError as exc:
            raise CommandError(
                f"the command channel needs the websockets package ({exc}); "
                "install it or pass --no-commands"
            ) from exc

        mode = CommandMode.APPLY
        if o["reject_commands"]:
            mode = CommandMode.REJECT
        elif o["ignore_commands"]:
            mode = CommandMode.IGNORE
        if o["command_delay"] < 0:
            raise ValueError("--command-delay must not be negative")
        return CommandChannel(
            o["server"],
            token,
            mode=mode,
            delay=o["command_delay"],
            backoff=Backoff(base=0.5, cap=o["backoff_cap"]),
        )

    def _queue_path(self, options, name: str) -> str:
        return options["queue"] or str(settings.VAR_DIR / "edge" / f"{name}.sqlite3")

    def _plant_cache(self, o, token: str) -> PlantCache:
        """Beside the queue. Until the server has named the gateway, the queue
        is known only from --queue, --name or --demo; otherwise the token names it."""
        if o["queue"]:
            return PlantCache(Path(o["queue"]).with_suffix(".plant.json"), token)
        name = o["name"] or (DEMO_GATEWAY if o["demo"] else "")
        name = name or f"gateway-{token_fingerprint(token)[:12]}"
        return PlantCache(settings.VAR_DIR / "edge" / f"{name}.plant.json", token)

    def _token(self, o) -> str:
        token_file = o["token_file"] or (demo_token_file() if o["demo"] else None)
        if token_file is None:
            token = o["token"]
        else:
            try:
                token = Path(token_file).read_text().strip()
            except OSError as exc:
                hint = " (run `manage.py issue_demo_gateway` first)" if o["demo"] else ""
                raise CommandError(f"cannot read the token file {token_file}{hint}: {exc}") from exc
        if not token:
            raise CommandError(
                "no token: pass --token or --token-file, set FLEETOPS_GATEWAY_TOKEN, or use --demo"
            )
        return token

    def _checked(self, o, token: str) -> dict:
        """Everything the options say, refused before the first network call."""
        if o["rate"] <= 0:
            raise CommandError("--rate must be positive")
        try:
            return {
                "faults": _parsed(Fault.parse, o["fault"]),
                "offline": _parsed(Window.parse_machine, o["offline"]),
                "link_offline": _parsed(Window.parse_link, o["link_offline"]),
                "sender": HttpSender(o["server"], token),
                "channels": [] if o["no_commands"] else [self._command_channel(o, token)],
            }
        except ValueError as exc:
            raise CommandError(str(exc)) from exc

    def _plant(self, o, token: str, stopping: threading.Event):
        """What to simulate, from the server's plant or its cached answer, and
        the channel that keeps it current; None when stopped while waiting."""
        cache = self._plant_cache(o, token)
        try:
            plant = plant_wait(
                o["server"],
                token,
                stopping=stopping,
                backoff=Backoff(cap=o["backoff_cap"]),
                out=self.stdout.write,
                cache=cache,
            )
            if plant is None:
                return None
            refresh = PlantRefresh(
                o["server"],
                token,
                cache=cache,
                known=plant,
                select=lambda answer: plant_select(
                    answer, only=_codes(o["machines"]), sensors=o["sensors"], name=o["name"]
                ),
                every=o["plant_refresh"],
                backoff=Backoff(cap=o["backoff_cap"]),
            )
            return refresh.select(plant), refresh
        except PlantError as exc:
            raise CommandError(str(exc)) from exc

    def handle(self, *args, **o):
        if o["show_quarantine"]:
            return self._show_quarantine(self._queue_path(o, self._quarantine_name(o)))
        token = self._token(o)
        checked = self._checked(o, token)
        stopping = threading.Event()
        agents: list[Agent] = []

        def on_signal(signum, _frame):
            self.stdout.write(
                f"{signal.Signals(signum).name}: stopping after the current send; "
                "queued batches stay on disk."
            )
            stopping.set()
            for agent in agents:
                agent.stop()

        previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            planned = self._plant(o, token, stopping)
            if planned is not None:
                agents.append(self._agent(o, *planned, checked))
                if not stopping.is_set():
                    self._run(o, agents[0], checked)
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            checked["sender"].close()

    def _agent(self, o, plant: GatewayPlant, refresh: PlantRefresh, checked: dict) -> Agent:
        try:
            simulator = Simulator.build(
                plant.machine_sensors,
                started_at=datetime.now(UTC),
                ramp_rate=o["ramp_rate"],
                seed=o["seed"],
                faults=checked["faults"],
                offline=checked["offline"],
            )
        except ValueError as exc:
            raise CommandError(str(exc)) from exc
        queue_path = self._queue_path(o, plant.name)
        queue = OfflineQueue(queue_path, max_rows=o["max_rows"])
        stats = queue.stats()
        sensors = sum(len(keys) for keys in plant.machine_sensors.values())
        self.stdout.write(
            f"Gateway {plant.name}: {len(plant.machine_sensors)} machines, {sensors} sensors, "
            f"{o['rate']:g} frames/s each -> {o['server']}; queue {queue_path} "
            f"({stats['queued_batches']} batches waiting, "
            f"{stats['quarantined_batches']} quarantined)."
        )
        return Agent(
            name=plant.name,
            simulator=simulator,
            queue=queue,
            sender=checked["sender"],
            rate=o["rate"],
            max_frames=o["max_frames"],
            drain_chunk=o["drain_chunk"],
            backoff=Backoff(cap=o["backoff_cap"]),
            link_offline=checked["link_offline"],
            out=lambda line: self.stdout.write(line),
            progress_every=o["progress_every"],
            channels=[*checked["channels"], *([refresh] if o["plant_refresh"] > 0 else [])],
        )

    def _run(self, o, agent: Agent, checked: dict) -> None:
        channels = checked["channels"]
        if channels:
            channel = channels[0]
            delay = f", after {o['command_delay']:g}s" if o["command_delay"] else ""
            self.stdout.write(f"Commands: {channel.mode}{delay} <- {channel.url}")
        else:
            self.stdout.write("Commands: off (--no-commands)")
        counters = agent.run(duration=o["duration"], drain_timeout=o["drain_timeout"])
        stats = agent.queue.stats()
        agent.queue.close()
        self.stdout.write(
            f"Stopped: produced {counters.produced_frames} frames in {counters.produced_batches} "
            f"batches, delivered {counters.accepted_frames} frames "
            f"({counters.duplicate_batches} duplicate batches); {stats['queued_batches']} "
            f"batches still queued, {stats['quarantined_batches']} quarantined, "
            f"{stats['dropped_frames']} frames dropped (queue full)."
        )
        if channels:
            c = channels[0].counters
            self.stdout.write(
                f"Commands: {c.received} received, {c.applied} applied, "
                f"{c.duplicates} duplicates acknowledged again, {c.refused} refused "
                f"({c.expired} expired), {c.ignored} ignored."
            )
        if counters.dropped_frames or stats["quarantined_batches"]:
            self.stderr.write("Some data did not reach the server: see the counts above.")

    def _quarantine_name(self, o) -> str:
        if o["name"] or o["demo"]:
            return o["name"] or DEMO_GATEWAY
        if not o["queue"]:
            raise CommandError("--show-quarantine needs --queue, --name or --demo")
        return ""

    def _show_quarantine(self, path: str) -> None:
        queue = OfflineQueue(path)
        try:
            stats = queue.stats()
            rows = queue.quarantined()
        finally:
            queue.close()
        self.stdout.write(
            f"{path}: {stats['quarantined_batches']} quarantined batches "
            f"({stats['quarantined_frames']} frames), {stats['queued_batches']} queued, "
            f"{stats['dropped_frames']} frames dropped while full."
        )
        for row in rows:
            when = datetime.fromtimestamp(row.quarantined_at, UTC).strftime("%Y-%m-%d %H:%M:%SZ")
            self.stdout.write(
                f"  {row.batch_id}  HTTP {row.status}  {row.frames} frames  {when}  "
                f"{row.error[:200]}"
            )
