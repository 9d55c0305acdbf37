"""Starts and stops the project's own Azurite (from ``node_modules``) for run, tests and bench."""

from __future__ import annotations

import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from shared.settings import PROJECT_ROOT
from shared.store.clients import azurite_connection_string

AZURITE_BIN = PROJECT_ROOT / "node_modules" / ".bin" / "azurite"


class AzuriteError(RuntimeError):
    pass


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.2)
        return sock.connect_ex((host, port)) == 0


@dataclass
class Azurite:
    location: Path
    blob_port: int = field(default_factory=free_port)
    queue_port: int = field(default_factory=free_port)
    table_port: int = field(default_factory=free_port)
    in_memory: bool = False
    host: str = "127.0.0.1"
    _process: subprocess.Popen[bytes] | None = None

    @property
    def connection_string(self) -> str:
        return azurite_connection_string(self.host, self.blob_port, self.queue_port, self.table_port)

    def start(self, timeout: float = 30.0) -> Azurite:
        if not AZURITE_BIN.exists():
            raise AzuriteError(f"{AZURITE_BIN} is missing: run 'npm ci' (make does it for you)")
        for port in (self.blob_port, self.queue_port, self.table_port):
            if port_open(port, self.host):
                raise AzuriteError(f"port {port} is already in use (another Azurite running?)")
        self.location.mkdir(parents=True, exist_ok=True)
        args = [
            str(AZURITE_BIN),
            "--blobHost", self.host, "--blobPort", str(self.blob_port),
            "--queueHost", self.host, "--queuePort", str(self.queue_port),
            "--tableHost", self.host, "--tablePort", str(self.table_port),
            "--skipApiVersionCheck", "--loose", "--silent",
        ]
        # In-memory for tests (fast, nothing left behind); on disk under the project for run.
        args += ["--inMemoryPersistence"] if self.in_memory else ["--location", str(self.location)]
        self._process = subprocess.Popen(
            args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=self.location
        )
        deadline = time.monotonic() + timeout
        while not all(port_open(p, self.host) for p in (self.blob_port, self.queue_port, self.table_port)):
            if self._process.poll() is not None:
                raise AzuriteError(f"Azurite exited with code {self._process.returncode}")
            if time.monotonic() > deadline:
                self.stop()
                raise AzuriteError("Azurite did not start in time")
            time.sleep(0.1)
        return self

    def stop(self) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        self._process = None

    def restart(self) -> None:
        self.stop()
        self.start()
