"""The system under test: the project's Azurite and the app served as ``make run`` serves it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from devtools.azurite import Azurite, free_port
from shared.settings import PROJECT_ROOT

API_KEY = "bench-key"
EVENTS_KEY = "bench-events-key"
INDEX_TABLE = "benchindex"


def azurite_version() -> str:
    package = PROJECT_ROOT / "node_modules" / "azurite" / "package.json"
    try:
        return json.loads(package.read_text(encoding="utf-8"))["version"]
    except (OSError, ValueError, KeyError):
        return "unknown"


def rss_mb(pid: int) -> float:
    """Resident set size of a process, from /proc (Linux)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for {pid}")


@dataclass
class Stack:
    """In-memory Azurite on free ports plus a uvicorn process running ``shared.http.app:create_app``."""

    profile: Path | None = None
    azurite: Azurite = field(init=False)
    port: int = field(default_factory=free_port)
    _server: subprocess.Popen[bytes] | None = None
    _tmp: tempfile.TemporaryDirectory[str] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def app_pid(self) -> int:
        assert self._server is not None
        return self._server.pid

    def start(self) -> Stack:
        self._tmp = tempfile.TemporaryDirectory(prefix="bench-azurite-")
        # In memory: the figures measure the design, not this machine's disk, and 60k blobs
        # leave nothing behind. Azurite keeps its metadata in memory either way (LokiJS).
        self.azurite = Azurite(location=Path(self._tmp.name), in_memory=True).start()
        env = {
            **os.environ,
            "OUTPUTS_STORAGE": self.azurite.connection_string,
            "INDEX_STORAGE": self.azurite.connection_string,
            "INDEX_TABLE": INDEX_TABLE,
            "API_KEYS": API_KEY,
            "EVENTS_KEYS": EVENTS_KEY,
            "TOKEN_SIGNING_KEY": "bench-signing-key",
        }
        command = [sys.executable, "-m", "uvicorn", "shared.http.app:create_app", "--factory",
                   "--host", "127.0.0.1", "--port", str(self.port), "--log-level", "warning"]
        if self.profile is not None:
            # py-spy starts the app as its child, so no ptrace permission is needed.
            command = [str(Path(sys.executable).parent / "py-spy"), "record", "--subprocesses",
                       "--rate", "200", "--format", "raw", "-o", str(self.profile), "--", *command]
        self._server = subprocess.Popen(command, cwd=PROJECT_ROOT, env=env)
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{self.url}/api/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if self._server.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("the app did not start")
            time.sleep(0.1)
        return self

    def server_pid(self) -> int:
        """The uvicorn process (py-spy's child when profiling)."""
        assert self._server is not None
        if self.profile is None:
            return self._server.pid
        children = Path(f"/proc/{self._server.pid}/task/{self._server.pid}/children").read_text().split()
        return int(children[0]) if children else self._server.pid

    def stop(self) -> None:
        if self._server is not None and self._server.poll() is None:
            self._server.send_signal(subprocess.signal.SIGINT)
            try:
                self._server.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self._server.kill()
                self._server.wait()
        self._server = None
        if hasattr(self, "azurite"):
            self.azurite.stop()
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None
