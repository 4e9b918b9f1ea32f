"""One writer per run directory: an exclusive lock held by the training process for the whole run.

`RUN_DIR/.lock` is locked with flock(2), which the kernel releases when its holder dies (kill -9
included), so the lock a crashed run leaves is taken over at once; the file records who holds it
(host, PID, command, start time), so a refused second writer is told whom it met. The trainer's global
main process holds it (under Accelerate or torchrun, a worker, not the launcher), so killing a launcher
while its workers still train cannot let a "resume" start beside them. On a filesystem without flock
the record itself is the lock: a holder on this host whose PID is gone is stale and taken over.
"""
from __future__ import annotations

import errno
import fcntl
import json
import os
import socket
import sys
import time
from pathlib import Path
from typing import Optional


class RunDirLocked(OSError):
    """Another live process trains in this run directory."""


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    return True


class RunLock:
    """acquire() / release() (or `with RunLock(run_dir):`); acquire raises RunDirLocked naming the holder.
    `took_over` is the record of a holder that ended without releasing (kill -9, power loss)."""

    def __init__(self, run_dir: Path):
        self.path = Path(run_dir) / ".lock"
        self.fd: Optional[int] = None
        self.took_over: Optional[dict] = None

    def holder(self) -> dict:
        try:
            return json.loads(self.path.read_text() or "{}")
        except (OSError, ValueError):
            return {}

    def acquire(self) -> "RunLock":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise RunDirLocked(self.refusal(self.holder())) from None
        except OSError as err:
            if err.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS):
                os.close(fd)
                raise
            self.check_record()  # no flock here (some network filesystems): the record decides
        previous = self.holder()
        self.took_over = previous or None
        record = {"host": socket.gethostname(), "pid": os.getpid(),
                  "started": time.strftime("%Y-%m-%d %H:%M:%S"), "command": " ".join(sys.argv)[:300]}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(record).encode(), 0)
        os.fsync(fd)
        self.fd = fd
        return self

    def check_record(self) -> None:
        held = self.holder()
        if not held:
            return
        if held.get("host") != socket.gethostname() or _pid_alive(int(held.get("pid", -1))):
            raise RunDirLocked(self.refusal(held) + f" (if it is not running, delete {self.path})")

    def refusal(self, holder: dict) -> str:
        who = "another process"
        if holder:
            who = (f"PID {holder.get('pid', '?')} on host {holder.get('host', '?')}, started "
                   f"{holder.get('started', '?')} ({holder.get('command', '?')})")
        return (f"run.dir {self.path.parent} is in use: {who} is training in it, and two writers would "
                "overwrite each other's checkpoints. Wait for it to finish or stop it, or use another "
                "run.dir")

    def release(self) -> None:
        if self.fd is None:
            return
        try:
            os.ftruncate(self.fd, 0)  # an empty record: nobody holds it
            fcntl.flock(self.fd, fcntl.LOCK_UN)
        except OSError:
            pass
        finally:
            os.close(self.fd)
            self.fd = None

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()
