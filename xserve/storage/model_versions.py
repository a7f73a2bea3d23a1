"""Model versions in the data directory: one directory per trained version and an atomic ``CURRENT`` pointer.

Layout (paths from :class:`~xserve.storage.layout.DataDirLayout`)::

    DIR/models/v<name>/ranker.pt, towers.pt    the checkpoints of one training run
    DIR/models/v<name>/MANIFEST.json           written last: the version is complete (checkpoint versions,
                                               metrics, the data it saw, the embedding version built for it)
    DIR/models/CURRENT                         {"version": name, "previous": name | null, "switched_at_ms"}
    DIR/models/ranker.pt, towers.pt            the first run's models (kept as they are), or, in a directory
                                               whose first models came from `xserve train`, links to CURRENT's
                                               files for tools that read these paths (CURRENT is the truth)

``xserve train`` writes a new version beside the old ones and switches ``CURRENT`` (write, fsync, rename):
the Ranker replicas follow it (``xserve.storage.version_poll.VersionFollower``). The retrieval towers
go live with the embedding version built by them, never alone: an embedding version's manifest names the
towers checkpoint that embedded it (``towers_checkpoint``), and the Retrieval replicas load that tower when
``embeddings/CURRENT`` switches. :meth:`ModelVersions.rollback` switches back to the previous version, and
to the embedding version recorded for it. No torch and no LanceDB here: paths and small JSON files only.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
from pathlib import Path
from typing import Any

from xserve.storage.files import write_json_atomic
from xserve.storage.layout import RANKER_FILE, TOWERS_FILE, DataDirLayout

__all__ = ["VERSION_NAME_RE", "ModelVersionError", "ModelVersions", "check_version_name"]

VERSION_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")  # model and embedding version names
MANIFEST = "MANIFEST.json"


class ModelVersionError(ValueError):
    """A version name, directory or switch that cannot be used; the message says why."""


def check_version_name(name: str) -> str:
    if not isinstance(name, str) or not VERSION_NAME_RE.match(name):
        raise ModelVersionError(
            f"version name must match {VERSION_NAME_RE.pattern} (letters, digits, '_', '.', '-'), got {name!r}")
    return name


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return None


class ModelVersions:
    """The model versions of one data directory (see the module docstring)."""

    def __init__(self, data_dir: str | Path) -> None:
        self.layout = DataDirLayout(data_dir)

    def __repr__(self) -> str:
        return f"ModelVersions({str(self.layout.models)!r}, current={self.current_name()!r})"

    # ------------------------------------------------------------------ reading

    def version_dir(self, name: str) -> Path:
        return self.layout.model_version(check_version_name(name))

    def manifest(self, name: str) -> dict[str, Any] | None:
        """The version's manifest, or None when it is not complete."""
        return _read_json(self.version_dir(name) / MANIFEST)

    def names(self) -> list[str]:
        """Complete versions, oldest first (by the time they were finished)."""
        root = self.layout.models
        if not root.is_dir():
            return []
        done = [(m.get("finished_at_ms", 0), p.name[1:]) for p in root.iterdir()
                if p.is_dir() and p.name.startswith("v") and (m := _read_json(p / MANIFEST)) is not None]
        return [name for _, name in sorted(done)]

    def current(self) -> dict[str, Any] | None:
        """The ``CURRENT`` record (version, previous, switched_at_ms), or None before the first switch."""
        return _read_json(self.layout.current_models)

    def current_name(self) -> str | None:
        cur = self.current()
        return None if cur is None else cur["version"]

    def ranker_path(self, name: str | None) -> Path:
        """The ranker checkpoint of version ``name`` (None: the unversioned ``models/ranker.pt``)."""
        return self.layout.ranker_checkpoint if name is None else self.version_dir(name) / RANKER_FILE

    def towers_path(self, name: str | None) -> Path:
        return self.layout.towers_checkpoint if name is None else self.version_dir(name) / TOWERS_FILE

    def live_paths(self) -> tuple[Path, Path]:
        """(ranker, towers) checkpoints of the current version, else of the unversioned directory."""
        name = self.current_name()
        return self.ranker_path(name), self.towers_path(name)

    # ------------------------------------------------------------------ writing

    def new_name(self, now_ms: int) -> str:
        """A fresh name ``<UTC time>`` (``-<n>`` added when that exists already)."""
        base = time.strftime("%Y%m%dT%H%M%S", time.gmtime(now_ms / 1000))
        name, n = base, 1
        while self.version_dir(name).exists():
            n += 1
            name = f"{base}-{n}"
        return name

    def begin(self, name: str) -> Path:
        """The directory to write ``name`` into; a half-written one left by a crash is discarded."""
        vdir = self.version_dir(name)
        if self.manifest(name) is not None:
            raise ModelVersionError(f"model version {name} is already complete; choose a new name")
        if vdir.exists():
            shutil.rmtree(vdir)
        vdir.mkdir(parents=True)
        return vdir

    def finish(self, name: str, finished_at_ms: int, **info: Any) -> dict[str, Any]:
        """Mark ``name`` complete once both checkpoints are in its directory."""
        vdir = self.version_dir(name)
        missing = [f for f in (RANKER_FILE, TOWERS_FILE) if not (vdir / f).is_file()]
        if missing:
            raise ModelVersionError(f"model version {name} lacks {', '.join(missing)}")
        manifest = {"version": name, "finished_at_ms": finished_at_ms, "embeddings": None, **info}
        write_json_atomic(vdir / MANIFEST, manifest)
        return manifest

    def record_embeddings(self, name: str, embedding_version: str) -> None:
        """Note in ``name``'s manifest the embedding version its towers built (what a rollback switches back to)."""
        manifest = self.manifest(name)
        if manifest is None:
            raise ModelVersionError(f"model version {name} is not complete")
        write_json_atomic(self.version_dir(name) / MANIFEST, {**manifest, "embeddings": embedding_version})

    def switch(self, name: str, now_ms: int) -> dict[str, Any]:
        """Point ``CURRENT`` at the complete version ``name``, atomically; the one it replaces becomes ``previous``."""
        if self.manifest(name) is None:
            raise ModelVersionError(f"cannot switch to model version {name}: it is not complete "
                                    f"(complete versions: {', '.join(self.names()) or 'none'})")
        old = self.current_name()
        record = {"version": name, "previous": old if old != name else (self.current() or {}).get("previous"),
                  "switched_at_ms": now_ms}
        write_json_atomic(self.layout.current_models, record)
        for live, target in ((self.layout.ranker_checkpoint, RANKER_FILE), (self.layout.towers_checkpoint, TOWERS_FILE)):
            if live.exists() and not live.is_symlink():
                continue  # the first run's own models: kept (embedding versions built before versions name them)
            tmp = live.with_name(f".{live.name}.tmp-{os.getpid()}")
            tmp.unlink(missing_ok=True)
            tmp.symlink_to(Path(self.version_dir(name).name) / target)  # relative: the directory may move
            os.replace(tmp, live)
        return record

    def rollback(self, now_ms: int, to: str | None = None) -> dict[str, Any]:
        """Switch to ``to``, else to the version ``CURRENT`` replaced; the rolled-back version becomes ``previous``."""
        cur = self.current()
        target = to if to is not None else (cur or {}).get("previous")
        if target is None:
            raise ModelVersionError("no previous model version to roll back to (name one: --to NAME)")
        return self.switch(target, now_ms)

    def prune(self, keep: int) -> list[str]:
        """Delete complete versions beyond the ``keep`` newest; never the current or the previous one."""
        cur = self.current() or {}
        names = self.names()
        keep_set = set(names[-max(keep, 1):]) | {cur.get("version"), cur.get("previous")}
        removed = [n for n in names if n not in keep_set]
        for n in removed:
            shutil.rmtree(self.version_dir(n), ignore_errors=True)
        return removed
