"""A server in a subprocess on a free loopback port: how tests, benchmarks and notebooks run ``memalign serve``.

The command may hold ``{port}``, replaced by a port the OS just handed out, so the same class starts
``python -m memalign serve`` or any other OpenAI-compatible server (``transformers serve``) for comparison.
It returns once ``GET /health`` answers 200, and reports how long that took and how much CPU the server
used, which is what the load benchmark compares.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from memalign.errors import ServerStartError


def free_port() -> int:
    """A loopback TCP port nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class ServerProcess:
    """``command`` (with ``{port}`` in it) started on 127.0.0.1, its output in ``log_path``.

    ``threads`` sets ``OMP_NUM_THREADS`` for the child (pass the server's own ``--threads`` in the command too).
    """

    def __init__(
        self, command: Sequence[str], log_path: Path, *, threads: int = 1, start_timeout_s: float = 90.0
    ) -> None:
        import httpx  # the serve extra

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = Path(log_path)
        env = {
            **os.environ,
            "MEMALIGN_PROGRESS": "0",
            "OMP_NUM_THREADS": str(threads),
            "TOKENIZERS_PARALLELISM": "false",
        }
        started = time.perf_counter()
        with self.log_path.open("wb") as log:  # the child keeps its own descriptor
            self.process = subprocess.Popen(
                [part.replace("{port}", str(self.port)) for part in command],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
            )
        deadline = time.monotonic() + start_timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise ServerStartError(f"the server exited while starting: {self._log_tail()} (log: {self.log_path})")
            try:
                if httpx.get(f"{self.url}/health", timeout=2).status_code == 200:
                    self.start_s = time.perf_counter() - started
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        self.stop()
        raise ServerStartError(f"the server did not answer /health in {start_timeout_s:.0f} s (log: {self.log_path})")

    def _log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def client(self, api_key: str = "none", timeout: float = 60.0) -> Any:
        """An official ``openai`` client for this server (no retries: a failure should show)."""
        import openai

        return openai.OpenAI(base_url=f"{self.url}/v1", api_key=api_key, max_retries=0, timeout=timeout)

    def cpu_s(self) -> float | None:
        """User + system CPU seconds the server used so far, every thread included (Linux; else None)."""
        try:
            fields = Path(f"/proc/{self.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            return None
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def kill(self) -> None:
        """``kill -9``: what a crash looks like to the state on disk."""
        self.process.send_signal(signal.SIGKILL)
        self.process.wait()

    def stop(self, timeout_s: float = 30.0) -> None:
        """SIGTERM, then SIGKILL if the server has not exited after ``timeout_s``."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                self.kill()

    def __enter__(self) -> ServerProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
