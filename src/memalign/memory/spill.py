"""Spill directories of the disk tier: their names, and their removal however the process ends.

A disk-tier store writes event K/V under ``<offload_dir or temp dir>/memalign-kv-<pid>-<host>-<random>/``.
They are removed

* on ``EventStore.close()``, when memory is detached, at garbage collection and at interpreter exit
  (a ``weakref.finalize`` per directory);
* on SIGTERM and SIGINT: while a spill directory exists or memory with a disk tier is attached, a handler
  detaches that memory, removes the directories, then hands the signal to the handler that was there
  before (so the process still stops the way it would have). The handlers are installed only then, only
  from the main thread, and the previous ones are put back when the last directory or memory is gone;
* after a crash (``kill -9``, power loss) by the next disk-tier store created on the same machine: it
  removes the directories of processes that no longer exist. The pid and a host tag in the name keep it
  away from another live process's directories, including those of processes on other machines sharing
  the folder.
"""

from __future__ import annotations

import atexit
import hashlib
import logging
import os
import re
import shutil
import signal
import socket
import tempfile
import threading
import weakref
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Any

logger = logging.getLogger(__name__)

PREFIX = "memalign-kv-"
_HOST = hashlib.sha256(socket.gethostname().encode()).hexdigest()[:8]
_NAME = re.compile(rf"^{re.escape(PREFIX)}(\d+)-([0-9a-f]{{8}})-")
_SIGNALS = (signal.SIGTERM, signal.SIGINT)

_lock = threading.RLock()
_dirs: dict[str, Callable[[], Any]] = {}  # live spill directory -> its remover (a weakref.finalize)
_detachers: dict[int, Callable[[], Any]] = {}  # attached disk-tier memories: id -> weak detach
_previous: dict[int, Any] = {}  # signal -> the handler ours replaced, while ours is installed


def spill_prefix() -> str:
    """Name prefix of this process's spill directories."""
    return f"{PREFIX}{os.getpid()}-{_HOST}-"


def owner_pid(name: str) -> int | None:
    """The pid in a spill directory name of this machine, or None (another host, or not a spill directory)."""
    match = _NAME.match(name)
    return int(match.group(1)) if match and match.group(2) == _HOST else None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by another user
    return True


def remove_stale(parent: str | os.PathLike[str] | None = None) -> list[Path]:
    """Remove the spill directories under ``parent`` (default: the temp dir) whose process is gone.

    Only directories named by this machine with a pid that no longer exists are touched; this
    process's own and every live process's are left alone. Returns what was removed.
    """
    folder = Path(parent) if parent is not None else Path(tempfile.gettempdir())
    removed: list[Path] = []
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return removed  # a missing or unreadable folder is reported when a spill is written there
    for entry in entries:
        pid = owner_pid(entry.name)
        if pid is None or pid == os.getpid() or _alive(pid):
            continue
        shutil.rmtree(entry.path, ignore_errors=True)
        if not os.path.exists(entry.path):
            removed.append(Path(entry.path))
            logger.info("removed spill directory %s of exited process %d", entry.path, pid)
    return removed


def create_dir(parent: Path) -> Path:
    """A fresh spill directory under ``parent`` named after this process (``OSError`` as mkdtemp raises)."""
    return Path(tempfile.mkdtemp(prefix=spill_prefix(), dir=parent))


# ---- live registry -------------------------------------------------------------------------------------


def track_dir(path: Path, remover: Callable[[], Any]) -> None:
    """Record a live spill directory and the call that removes it (signal handlers run it)."""
    with _lock:
        _dirs[str(path)] = remover
        _update_handlers()


def forget_dir(path: Path | str) -> None:
    """The directory was removed: stop tracking it (handlers go when nothing is live)."""
    with _lock:
        _dirs.pop(str(path), None)
        _update_handlers()


def track_memory(memory: Any) -> int:
    """Record an attached memory with a disk tier; a signal detaches it. Returns the token for :func:`forget_memory`."""
    detach = weakref.WeakMethod(memory.detach)
    with _lock:
        _detachers[id(memory)] = detach
        _update_handlers()
    return id(memory)


def forget_memory(token: int) -> None:
    with _lock:
        _detachers.pop(token, None)
        _update_handlers()


def cleanup() -> None:
    """Detach every tracked memory and remove every live spill directory (signals, interpreter exit)."""
    with _lock:
        detachers, removers = list(_detachers.values()), list(_dirs.values())
    for ref in detachers:
        method = ref()
        if method is not None:
            try:
                method()
            except Exception:  # keep cleaning: the remaining directories must still go
                logger.exception("detaching episodic memory during cleanup failed")
    for remove in removers:
        remove()
    with _lock:
        _detachers.clear()
        _dirs.clear()
        _update_handlers()


def handlers_installed() -> bool:
    """Whether this module's signal handler is installed for SIGTERM or SIGINT."""
    return any(signal.getsignal(sig) is _on_signal for sig in _SIGNALS)


def _on_signal(signum: int, frame: FrameType | None) -> None:
    previous = _previous.get(signum, signal.SIG_DFL)
    logger.warning("signal %d: detaching episodic memory and removing its spill directories", signum)
    cleanup()  # also puts the previous handlers back
    if callable(previous):
        previous(signum, frame)
    elif previous in (signal.SIG_DFL, None):
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)  # end the way the signal would have ended the process


def _update_handlers() -> None:
    live = bool(_dirs or _detachers)
    if threading.current_thread() is not threading.main_thread():
        return  # signal.signal only works there; interpreter exit and finalizers still clean up
    for sig in _SIGNALS:
        current = signal.getsignal(sig)
        if live and sig not in _previous and current is not signal.SIG_IGN:  # an ignored signal ends nothing
            _previous[sig] = current
            signal.signal(sig, _on_signal)
        elif not live and sig in _previous and current is _on_signal:
            old = _previous.pop(sig)
            signal.signal(sig, old if old is not None else signal.SIG_DFL)
        # Not live but replaced by a later handler: ours stays in its chain and passes the signal through
        # to the handler it replaced, which stays recorded.


atexit.register(cleanup)
