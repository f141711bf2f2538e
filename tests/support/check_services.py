"""Make sure the services profile has PostgreSQL and Redis.

Starts a local service that is installed but stopped (as the developers'
guide says to), then checks again. Under CI=true an unreachable service
fails the run with a clear message; elsewhere the services profile is
skipped with a loud notice (var/services-skipped tells the Makefile).
"""

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlparse

SKIP_MARK = Path(__file__).resolve().parents[2] / "var" / "services-skipped"


def postgres_ok(url: str) -> str | None:
    import psycopg

    parsed = urlparse(url)
    try:
        psycopg.connect(
            host=parsed.hostname,
            port=parsed.port or 5432,
            user=parsed.username or "postgres",
            dbname="postgres",
            connect_timeout=3,
        ).close()
    except Exception as exc:
        return f"PostgreSQL at {parsed.hostname}:{parsed.port or 5432}: {exc}".strip()
    return None


def redis_ok(url: str) -> str | None:
    import redis

    try:
        redis.Redis.from_url(url, socket_connect_timeout=3).ping()
    except Exception as exc:
        return f"Redis at {url}: {exc}"
    return None


def start_local_services(problems: list[str]) -> None:
    if any(p.startswith("PostgreSQL") for p in problems) and shutil.which("pg_ctlcluster"):
        versions = sorted(os.listdir("/etc/postgresql")) if os.path.isdir("/etc/postgresql") else []
        if versions:
            print(f"Starting PostgreSQL {versions[-1]} ...", flush=True)
            subprocess.run(
                ["pg_ctlcluster", "--skip-systemctl-redirect", versions[-1], "main", "start"],
                check=False,
            )
    if any(p.startswith("Redis") for p in problems) and shutil.which("redis-server"):
        print("Starting Redis ...", flush=True)
        subprocess.run(
            [
                "redis-server",
                "--daemonize",
                "yes",
                "--bind",
                "127.0.0.1",
                "--port",
                "6379",
                "--save",
                "",
                "--appendonly",
                "no",
            ],
            check=False,
        )
    time.sleep(2)


def main(database_url: str, redis_url: str) -> int:
    SKIP_MARK.parent.mkdir(exist_ok=True)
    SKIP_MARK.unlink(missing_ok=True)
    problems = [p for p in (postgres_ok(database_url), redis_ok(redis_url)) if p]
    if problems:
        start_local_services(problems)
        problems = [p for p in (postgres_ok(database_url), redis_ok(redis_url)) if p]
    if not problems:
        return 0
    message = "\n".join(f"  - {p}" for p in problems)
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        print(
            f"ERROR: the services profile needs PostgreSQL and Redis:\n{message}", file=sys.stderr
        )
        return 1
    SKIP_MARK.write_text(message)
    banner = "!" * 72
    print(f"{banner}\n!! SERVICES PROFILE WILL BE SKIPPED: unreachable\n{message}\n{banner}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2]))
