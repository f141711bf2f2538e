"""The server's last `GET /api/v1/gateway` answer, kept on the gateway's disk.

A gateway rebooted while its server is unreachable still knows what it
simulates, so it goes on recording into its durable queue instead of
waiting for the link. The file sits beside the queue, is replaced
atomically (a crash mid-write leaves the previous answer) and is readable
by the process user only. It holds a fingerprint of the token, never the
token: an answer given to another token is not this gateway's plant.
"""

import hashlib
import json
import os
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

VERSION = 1


def token_fingerprint(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class CacheMiss(Exception):
    """No cached answer this gateway may start from; the message says why."""


@dataclass
class PlantCache:
    path: Path
    token: str

    def save(self, document: dict, *, now: datetime | None = None) -> None:
        record = {
            "version": VERSION,
            "saved_at": (now or datetime.now(UTC)).isoformat(),
            "token_sha256": token_fingerprint(self.token),
            "answer": document,
        }
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # mkstemp creates the file 0600 in the same directory, so the rename is atomic.
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=f".{self.path.name}.")
        try:
            with os.fdopen(fd, "w") as f:
                json.dump(record, f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def load(self) -> tuple[dict, datetime]:
        """The cached answer and when the server gave it, or CacheMiss."""
        try:
            record = json.loads(self.path.read_text())
            saved_at = datetime.fromisoformat(record["saved_at"])
            fingerprint, document = record["token_sha256"], record["answer"]
        except FileNotFoundError:
            raise CacheMiss(f"no cached plant at {self.path}") from None
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise CacheMiss(f"unreadable cached plant at {self.path}: {exc!r}") from exc
        if fingerprint != token_fingerprint(self.token):
            raise CacheMiss(f"the cached plant at {self.path} was given to another token")
        return document, saved_at
