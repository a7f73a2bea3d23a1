"""``Journal``: an append-only file of msgspec events, durable on return, replayed on restart.

Record layout: ``u32 length | u32 crc32 | msgpack payload`` (little endian).
``append`` writes a batch with one ``write`` and (with ``fsync``) one
``fsync``, so an acknowledged batch survives a crash or power loss. A torn
tail (a crash mid-write: a short header, short payload or bad checksum) ends
the replay and is cut off, so the next append starts on a record boundary.
One writer per file (each user or hydration shard owns its journal). Plain files, no LanceDB:
the user store and hydration shells log their small events here.
"""

from __future__ import annotations

import os
import struct
import zlib
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Generic, TypeVar

import msgspec

__all__ = ["Journal"]

T = TypeVar("T")
_HEADER = struct.Struct("<II")


class Journal(Generic[T]):
    """Events of type ``type_`` (a Struct or a union of tagged Structs) in the file at ``path``."""

    def __init__(self, path: str | os.PathLike[str], type_: Any, fsync: bool = True) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fsync = fsync
        self._encoder = msgspec.msgpack.Encoder()
        self._decoder = msgspec.msgpack.Decoder(type_)
        self._file = None
        self.records = 0

    def __repr__(self) -> str:
        return f"Journal({str(self.path)!r}, records={self.records})"

    def replay(self) -> Iterator[T]:
        """Every complete record in append order; cuts a torn tail off the file. Call before ``append``."""
        if not self.path.exists():
            return
        data = self.path.read_bytes()
        pos = 0
        while pos + _HEADER.size <= len(data):
            length, crc = _HEADER.unpack_from(data, pos)
            payload = data[pos + _HEADER.size : pos + _HEADER.size + length]
            if len(payload) < length or zlib.crc32(payload) != crc:
                break
            pos += _HEADER.size + length
            self.records += 1
            yield self._decoder.decode(payload)
        if pos < len(data):
            with open(self.path, "r+b") as fh:
                fh.truncate(pos)

    def append(self, events: Sequence[T], sync: bool = True) -> None:
        """Write ``events`` as one batch; durable when this returns (``sync=False``: survives a process
        crash, not a power loss - for soft data such as served history)."""
        if not events:
            return
        if self._file is None:
            self._file = open(self.path, "ab")
        chunks = []
        for event in events:
            payload = self._encoder.encode(event)
            chunks.append(_HEADER.pack(len(payload), zlib.crc32(payload)))
            chunks.append(payload)
        self._file.write(b"".join(chunks))
        self._file.flush()
        if self._fsync and sync:
            os.fsync(self._file.fileno())
        self.records += len(events)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
