"""``save --tracked``: follow a log until the task is done, then flush the rest.

Every failed flush is reported on stderr as it happens, and the command exits non-zero when
any flush failed, even if a later one caught up: a failure is never swallowed.
"""

from __future__ import annotations

import os
import signal
import time
from datetime import timedelta
from pathlib import Path
from typing import Any, Optional, Union

from rich.console import Console

from .display import say
from .errors import OutputStorageError
from .storage import JobOutputStorage, TaskOutputStorage


def follow(target: Union[TaskOutputStorage, JobOutputStorage], kind: str, file: Path, destination: str,
           interval: float, wait_pid: Optional[int], idle: float, console: Console) -> str:
    """Follow ``file`` until SIGINT/SIGTERM, ``wait_pid`` exits or the file stays idle; flush.

    Returns the blob name; raises ``OutputStorageError`` when a flush failed."""
    stop = {"now": False}

    def request_stop(signum: int, frame: Any) -> None:
        stop["now"] = True

    def report(exc: BaseException) -> None:
        say(console, f"batch-outputs: flush of {file} failed (retried at the next interval): {_first_line(exc)}")

    previous = {sig: signal.signal(sig, request_stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        with target.save_tracked(kind, file, destination, interval=timedelta(seconds=interval), on_error=report) as tracked:
            say(console, f"following {file} into {tracked.blob_name} (Ctrl-C or SIGTERM to finish)")
            last_change, last_size = time.monotonic(), -1
            while not stop["now"]:
                time.sleep(min(0.2, interval))
                if wait_pid is not None and not _alive(wait_pid):
                    break
                size = _size(file)
                if size != last_size:
                    last_change, last_size = time.monotonic(), size
                elif idle and time.monotonic() - last_change >= idle:
                    break
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if tracked.errors:
        raise OutputStorageError(f"{len(tracked.errors)} flush(es) of {file} failed (first: {_first_line(tracked.errors[0])}); "
                                 f"the final flush saved it all to {tracked.blob_name}")
    return tracked.blob_name


def _first_line(exc: BaseException) -> str:
    text = str(exc)
    return text.splitlines()[0] if text else type(exc).__name__


def _size(file: Path) -> int:
    """The file's size, or -1 while it is missing (a log being rotated or recreated)."""
    try:
        return file.stat().st_size
    except FileNotFoundError:
        return -1


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
