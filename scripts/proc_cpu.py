"""CPU-seconds of a local app's processes, by kind, read from ``/proc`` (Linux; the server on this machine).

The app is found from its HTTP port: the process listening on it (Serve's ``ProxyActor``), then up its
ancestors to the topmost that runs ``xserve`` (the ``xserve serve`` driver that started Ray; a wrapper that
only names it among its arguments is not the app), then every descendant of that: Ray's own processes (GCS, raylet, dashboard, monitors), the Serve
controller and proxy, the deployments' replicas and the store actors. A process's kind is its title
(``ray::ServeReplica:xserve:Ranker`` -> ``Ranker``; ``ray::UserStoreShard.get`` -> ``UserStoreShard``) or
its program's name (``raylet``, ``gcs_server``, ``dashboard.py``). ``scripts/load_test.py`` samples it
before and after a timed run and prints each kind's CPU per feed.
"""

from __future__ import annotations

import os
import re
from collections import defaultdict
from dataclasses import dataclass

__all__ = ["AppProcesses", "cpu_by_kind", "cpu_seconds", "kind_of", "listening_pid", "process_kind"]

_TICK_S = 1.0 / os.sysconf("SC_CLK_TCK")
_PROC = "/proc"


def _read(path: str) -> str | None:
    try:
        with open(path, "rb") as f:
            return f.read().decode(errors="replace")
    except OSError:  # gone, or not ours to read
        return None


def _stat(pid: int) -> tuple[int, float] | None:
    """(parent pid, CPU seconds: user + system of all its threads) or None when gone."""
    text = _read(f"{_PROC}/{pid}/stat")
    if text is None:
        return None
    fields = text[text.rindex(")") + 2 :].split()  # after "pid (comm) ": state is fields[0]
    return int(fields[1]), (int(fields[11]) + int(fields[12])) * _TICK_S


def _cmdline(pid: int) -> str:
    return (_read(f"{_PROC}/{pid}/cmdline") or "").replace("\0", " ").strip()


def kind_of(cmdline: str) -> str:
    """A process's kind from its command line (its arguments separated by NULs, as ``/proc`` gives them, or
    spaces): the actor or replica class of a Ray worker (``ray::ServeReplica:default:Ranker`` -> ``Ranker``,
    ``ray::ThunderShard.query`` -> ``ThunderShard``), ``xserve_serve`` for the server, ``raylet``,
    ``gcs_server``, a Python script's name without ``.py`` (``log_monitor``), else the program's name."""
    words = cmdline.replace("\0", " ").split()
    if not words:
        return "unknown"
    if words[0].startswith("ray::"):
        return re.split(r"[.(]", words[0][len("ray::"):].split(":")[-1], maxsplit=1)[0] or "worker"
    names = [os.path.basename(w) for w in words]
    if _runs_xserve(cmdline) and "serve" in words:
        return "xserve_serve"
    for name in names:
        if name.endswith(".py") or name in ("raylet", "gcs_server"):
            return name.removesuffix(".py")
    return names[0]


def process_kind(pid: int) -> str:
    """:func:`kind_of` process ``pid``; ``?`` when it is gone."""
    cmdline = _read(f"{_PROC}/{pid}/cmdline")
    return "?" if cmdline is None else kind_of(cmdline)


def cpu_seconds(pid: int) -> float:
    """CPU seconds (user + system) process ``pid`` has used so far; 0 when it is gone."""
    st = _stat(pid)
    return 0.0 if st is None else st[1]


def _runs_xserve(cmdline: str) -> bool:
    """The command line runs xserve itself (``xserve serve``, ``python -m xserve serve``), not merely names it
    (a ``flock /tmp/xserve-heavy.lock ...`` wrapper, whose descendants include the load test)."""
    words = cmdline.replace("\0", " ").split()
    names = [os.path.basename(w) for w in words[:2]]  # the program, or the interpreter and its script
    return "xserve" in names or words[1:3] == ["-m", "xserve"]


def _socket_inodes(port: int) -> set[str]:
    inodes = set()
    for table in ("tcp", "tcp6"):
        for row in (_read(f"{_PROC}/net/{table}") or "").splitlines()[1:]:
            cols = row.split()
            local, state, inode = cols[1], cols[3], cols[9]
            if state == "0A" and int(local.rsplit(":", 1)[1], 16) == port:  # 0A: LISTEN
                inodes.add(inode)
    return inodes


def listening_pid(port: int) -> int | None:
    """The process with a listening socket on ``port`` (ours to read), or None."""
    inodes = _socket_inodes(port)
    if not inodes:
        return None
    for name in os.listdir(_PROC):
        if not name.isdigit():
            continue
        try:
            links = os.listdir(f"{_PROC}/{name}/fd")
        except OSError:
            continue
        for fd in links:
            try:
                target = os.readlink(f"{_PROC}/{name}/fd/{fd}")
            except OSError:
                continue
            if target.startswith("socket:[") and target[8:-1] in inodes:
                return int(name)
    return None


@dataclass(frozen=True)
class AppProcesses:
    """The process tree under ``root``; :meth:`cpu_s` samples it."""

    root: int

    @classmethod
    def serving(cls, port: int) -> "AppProcesses | None":
        """The app serving ``port`` on this machine (module docstring), or None when no local process listens."""
        pid = listening_pid(port)
        if pid is None:
            return None
        root, at = pid, pid
        while (st := _stat(at)) is not None and st[0] > 1:
            at = st[0]
            if _runs_xserve(_cmdline(at)):
                root = at
        return cls(root)

    def cpu_s(self) -> dict[int, tuple[str, float]]:
        """pid -> (kind, CPU seconds so far) for the root and every descendant alive now."""
        parents: dict[int, list[int]] = defaultdict(list)
        times: dict[int, float] = {}
        for name in os.listdir(_PROC):
            if name.isdigit() and (st := _stat(int(name))) is not None:
                parents[st[0]].append(int(name))
                times[int(name)] = st[1]
        out: dict[int, tuple[str, float]] = {}
        todo = [self.root]
        while todo:
            pid = todo.pop()
            if pid in times:
                out[pid] = (kind_of(_cmdline(pid)), times[pid])
            todo.extend(parents.get(pid, ()))
        return out


def cpu_by_kind(before: dict[int, tuple[str, float]], after: dict[int, tuple[str, float]]) -> dict[str, float]:
    """Kind -> CPU seconds spent between two samples (a process started in between counts from 0; the kind is
    the one seen last, as titles change while an actor runs a method)."""
    out: dict[str, float] = defaultdict(float)
    for pid, (kind, t) in after.items():
        out[kind] += t - before.get(pid, (kind, 0.0))[1]
    return dict(out)
