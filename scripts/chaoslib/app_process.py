"""``xserve serve`` in a child process (a session of its own): start it, find its Ray address, kill it."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

__all__ = ["ROOT", "AppProcess", "pid_alive"]

ROOT = Path(__file__).resolve().parents[2]  # the checkout: the app runs from it without installing


class AppProcess:
    """``xserve serve`` in a child process (a session of its own); its Ray cluster is its descendants."""

    def __init__(self, data_dir: Path, port: int, num_cpus: int, env: dict[str, str], log_path: Path,
                 start_timeout_s: float) -> None:
        self.data_dir, self.port, self.num_cpus, self.env, self.log_path = data_dir, port, num_cpus, env, log_path
        self.start_timeout_s = start_timeout_s  # a start, first-run seeding and training included
        self.proc: subprocess.Popen[bytes] | None = None
        self.ray_address: str | None = None  # said by the app on its log; None while it is down

    def start(self) -> None:
        """Start and wait until ``/healthz`` answers 200; raises RuntimeError (with the log's tail) if not."""
        _wait_port_free(self.port, 30.0)  # a listener of the killed app may take a moment to go
        offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        log = open(self.log_path, "ab")
        cmd = [sys.executable, "-m", "xserve", "serve", "--data-dir", str(self.data_dir), "--port", str(self.port),
               "--num-cpus", str(self.num_cpus)]
        self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=self.env, cwd=ROOT,
                                     start_new_session=True)
        log.close()
        deadline = time.monotonic() + self.start_timeout_s
        while True:
            text = self.log_path.read_bytes()[offset:].decode(errors="replace")
            if self.ray_address is None and (m := re.search(r"Ray at ([^;\s]+);", text)):
                self.ray_address = m.group(1)
            if self.proc.poll() is not None:
                raise RuntimeError(f"the app exited with status {self.proc.returncode}: {_tail(text)}")
            if self.ray_address is not None and self.healthy():
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"the app was not healthy within {self.start_timeout_s:g} s: {_tail(text)}")
            time.sleep(0.5)

    def healthy(self) -> bool:
        """Whether ``/healthz`` answers 200."""
        try:
            return httpx.get(f"http://127.0.0.1:{self.port}/healthz", timeout=5).status_code == 200
        except httpx.HTTPError:
            return False

    def pids(self) -> list[int]:
        """The server process, its descendants, and anything left in its session (orphans reparented to init)."""
        if self.proc is None:
            return []
        root = self.proc.pid
        children: dict[int, list[int]] = {}
        session: list[int] = []
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            fields = stat[stat.rindex(")") + 2 :].split()  # after "pid (comm) ": state ppid pgrp session ...
            pid, ppid, sid = int(entry), int(fields[1]), int(fields[3])
            children.setdefault(ppid, []).append(pid)
            if sid == root:
                session.append(pid)
        found, stack = set(), [root]
        while stack:
            pid = stack.pop()
            if pid not in found:
                found.add(pid)
                stack.extend(children.get(pid, ()))
        return sorted(found | set(session))

    def kill9(self, timeout_s: float = 30.0) -> int:
        """kill -9 every process of the app; returns how many; waits until they are gone."""
        pids = self.pids()
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if self.proc is not None:
            self.proc.wait(timeout=timeout_s)
        deadline = time.monotonic() + timeout_s
        while any(pid_alive(p) for p in pids) and time.monotonic() < deadline:
            time.sleep(0.1)
        self.ray_address = None
        return len(pids)

    def stop(self) -> None:
        """Ctrl-C the server (it shuts its Ray down), then kill -9 whatever is left."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                pass
        self.kill9()
        self.proc = None


def _wait_port_free(port: int, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        with socket.socket() as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the server binds
            try:
                probe.bind(("127.0.0.1", port))
                return
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"port {port} is still taken {timeout_s:g} s after the app was killed") from None
        time.sleep(0.2)


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` runs (a zombie counts as gone)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def _tail(text: str, n: int = 600) -> str:
    return " | ".join(text.strip().splitlines()[-8:])[-n:]
