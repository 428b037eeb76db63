"""Processes: servers under test as subprocesses, load generators as worker processes,
and a psutil sampler of a server's resident memory."""

from __future__ import annotations

import multiprocessing as mp
import os
import queue
import signal
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

from bench.paths import REPO, VENV_PYTHON

SPAWN = mp.get_context("spawn")
_RUNNING: set[Server] = set()


def stop_all_servers() -> None:
    """Stop every server this process started and has not stopped (atexit / signal cleanup)."""
    for server in list(_RUNNING):
        server.stop()


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass(eq=False)
class Server:
    """A server under test, started as a subprocess and stopped by its own pid.

    Args:
        name: label for the log file.
        argv: command line.
        env: extra environment variables (added to a copy of ours).
        port: the port it listens on (127.0.0.1).
        log_dir: where its stdout/stderr go (``<name>.log``).
        ready_path: GET path that answers 200 once it serves (None: wait for the TCP port only).
    """

    name: str
    argv: Sequence[str]
    env: dict[str, str]
    port: int
    log_dir: Path
    ready_path: str | None = "/healthz"
    proc: subprocess.Popen | None = field(default=None, init=False)

    def start(self, timeout_s: float = 60.0) -> Server:
        """Start it and wait until it answers.

        Raises:
            RuntimeError: when it exits or does not answer within ``timeout_s`` (quotes its log).
        """
        env = {**os.environ, **self.env}
        self.log_path = self.log_dir / f"{self.name}.log"
        log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            list(self.argv), env=env, cwd=REPO, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        log.close()
        _RUNNING.add(self)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode}: {self.log_tail()}")
            if self._answers():
                return self
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(
            f"{self.name} did not answer on port {self.port} within {timeout_s:.0f} s: {self.log_tail()}"
        )

    def _answers(self) -> bool:
        try:
            if self.ready_path is None:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return True
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{self.ready_path}", timeout=1) as resp:
                return resp.status == 200
        except (OSError, urllib.error.URLError):
            return False

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def log_tail(self, chars: int = 2000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return "(no log)"

    def stop(self, timeout_s: float = 10.0) -> None:
        """SIGINT (graceful, as Ctrl-C), then SIGKILL of this process only if it lingers."""
        _RUNNING.discard(self)
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)

    def __enter__(self) -> Server:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()


def pulseboard_server(name: str, port: int, log_dir: Path, env: dict[str, str]) -> Server:
    """``pulseboard serve`` on ``port`` with ``env`` (PULSEBOARD_* settings, DATABASE_URL)."""
    argv = [str(VENV_PYTHON), "-m", "app.cli", "serve", "--port", str(port)]
    return Server(name, argv, env, port, log_dir)


def bench_server(
    name: str, module: str, port: int, log_dir: Path, args: Sequence[str] = (), ready_path: str | None = None
) -> Server:
    """A baseline server of ``bench.servers`` (``python -m <module> --port P ...``)."""
    argv = [str(VENV_PYTHON), "-m", module, "--port", str(port), *args]
    return Server(name, argv, {}, port, log_dir, ready_path=ready_path)


class RssSampler:
    """Samples a process's RSS every ``interval_s`` in a thread; ``peak_bytes`` is the maximum seen."""

    def __init__(self, pid: int, interval_s: float = 0.02) -> None:
        self._proc = psutil.Process(pid)
        self._interval_s = interval_s
        self._stop = threading.Event()
        self.peak_bytes = 0
        self.samples = 0
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.peak_bytes = max(self.peak_bytes, self._proc.memory_info().rss)
                self.samples += 1
            except psutil.Error:
                return
            self._stop.wait(self._interval_s)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join()


class CpuMeter:
    """CPU seconds used by a process between ``start`` and ``stop`` (user + system)."""

    def __init__(self, pid: int) -> None:
        self._proc = psutil.Process(pid)
        self.cpu_s = 0.0

    def __enter__(self) -> CpuMeter:
        t = self._proc.cpu_times()
        self._t0 = t.user + t.system
        return self

    def __exit__(self, *exc: Any) -> None:
        t = self._proc.cpu_times()
        self.cpu_s = t.user + t.system - self._t0


def run_workers(
    jobs: Sequence[tuple[Callable, Any]], timeout_s: float, on_go: Callable[[], None] | None = None
) -> list[Any]:
    """Run each ``(target, spec)`` of ``jobs`` as ``target(spec, ready_q, go_event, out_q, index)``
    in its own spawned process.

    Every worker prepares (connects), reports ready, and all start together
    when ``go_event`` is set; ``on_go`` runs in the parent right after.  Results
    come back in job order.

    Raises:
        RuntimeError: when a worker does not get ready or finish within ``timeout_s``.
    """
    ready_q, out_q, go = SPAWN.Queue(), SPAWN.Queue(), SPAWN.Event()
    procs = [
        SPAWN.Process(target=target, args=(spec, ready_q, go, out_q, i), daemon=True)
        for i, (target, spec) in enumerate(jobs)
    ]
    for p in procs:
        p.start()
    try:
        deadline = time.monotonic() + timeout_s
        for _ in procs:
            ready_q.get(timeout=max(0.1, deadline - time.monotonic()))
        go.set()
        if on_go is not None:
            on_go()
        results: dict[int, Any] = {}
        for _ in procs:
            index, result = out_q.get(timeout=max(0.1, deadline - time.monotonic()))
            results[index] = result
        return [results[i] for i in range(len(procs))]
    except queue.Empty as exc:
        raise RuntimeError(f"load generators did not get ready or finish within {timeout_s:.0f} s") from exc
    finally:
        for p in procs:
            p.join(5)
            if p.is_alive():
                p.kill()
                p.join(2)
