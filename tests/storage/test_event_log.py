import os

import pytest

from tests.thunder.factories import created, deleted, post
from xserve.storage.log.event_log import EventLog, EventLogCorrupt, EventLogLocked, LogCursor

EVENTS = created(post(1, 7), post(2, 8)) + [deleted(1)]


def test_append_read_and_reopen(tmp_path):
    with EventLog(tmp_path, writer=True) as log:
        assert log.append(EVENTS, 100) == (0, 3)
        assert log.append(EVENTS[:1], 200) == (3, 4)
    with EventLog(tmp_path, writer=True) as log:  # reopen: offsets continue
        assert log.next_offset == 4 and log.truncated_bytes == 0
        assert log.append(EVENTS[1:2], 300) == (4, 5)
    entries = list(EventLog(tmp_path).read())
    assert [(o, t) for o, t, _ in entries] == [(0, 100), (1, 100), (2, 100), (3, 200), (4, 300)]
    assert [e for _, _, e in entries] == EVENTS + EVENTS[:1] + EVENTS[1:2]
    assert [o for o, _, _ in EventLog(tmp_path).read(from_offset=2, until_offset=4)] == [2, 3]


@pytest.mark.parametrize("cut", [1, 7, 20, -1])
def test_torn_tail_is_truncated_on_open(tmp_path, cut):
    with EventLog(tmp_path, writer=True) as log:
        log.append(EVENTS, 100)
        seg = next(tmp_path.glob("*.seg"))
        whole = seg.stat().st_size
        log.append(EVENTS[:1], 200)
    size = seg.stat().st_size
    with open(seg, "r+b") as f:  # a crash mid-record: only part of the last frame reached the disk
        f.truncate(size - cut if cut > 0 else size)
        if cut < 0:  # or the whole frame is there but its payload is garbage
            f.seek(size - 2)
            f.write(b"\xff\xff")
    # a reader (another process) stops at the torn tail without touching the file
    assert [o for o, _, _ in EventLog(tmp_path).read()] == [0, 1, 2]
    with EventLog(tmp_path, writer=True) as log:
        assert log.truncated_bytes == (size - cut if cut > 0 else size) - whole
        assert seg.stat().st_size == whole and log.next_offset == 3
        assert log.append(EVENTS[2:], 300) == (3, 4)
    assert [o for o, _, _ in EventLog(tmp_path).read()] == [0, 1, 2, 3]


def test_corruption_before_the_tail_is_an_error(tmp_path):
    with EventLog(tmp_path, writer=True, segment_bytes=1) as log:  # one segment per append
        log.append(EVENTS[:1], 1)
        log.append(EVENTS[1:2], 2)
    first = sorted(tmp_path.glob("*.seg"))[0]
    data = bytearray(first.read_bytes())
    data[-1] ^= 0xFF
    first.write_bytes(bytes(data))
    with pytest.raises(EventLogCorrupt, match="not the log's tail"):
        list(EventLog(tmp_path).read())


def test_segments_roll_and_old_ones_drop(tmp_path):
    with EventLog(tmp_path, writer=True, segment_bytes=1) as log:
        for t in (100, 200, 300):
            log.append(EVENTS, t)
        assert len(list(tmp_path.glob("*.seg"))) == 3
        assert log.drop_before(150) == 0  # the second segment started at 200: the first may hold live records
        assert log.drop_before(250) == 1
        assert log.drop_before(10**9) == 1  # never the active segment
        assert [o for o, _, _ in EventLog(tmp_path).read()] == [6, 7, 8]
        assert log.append(EVENTS[:1], 400) == (9, 10)
        assert [o for o, _, _ in EventLog(tmp_path).read(since_ms=301)] == [9]
        assert [o for o, _, _ in EventLog(tmp_path).read(from_offset=7, since_ms=300)] == [7, 8, 9]


def test_one_writer_at_a_time(tmp_path):
    with EventLog(tmp_path, writer=True):
        with pytest.raises(EventLogLocked, match="already open for writing"):
            EventLog(tmp_path, writer=True)
        with pytest.raises(RuntimeError, match="read-only"):
            EventLog(tmp_path).append(EVENTS, 1)


def test_fsync_path_syncs_file_and_directory(tmp_path, monkeypatch):
    synced = []
    real = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (synced.append(fd), real(fd)))
    with EventLog(tmp_path, writer=True, fsync=True, segment_bytes=1) as log:
        n = len(synced)  # the first segment's directory entry
        assert n >= 1
        log.append(EVENTS, 1)
        assert len(synced) == n + 1  # the data
        log.append(EVENTS, 2)  # rolls: directory entry + data
        assert len(synced) == n + 3
    synced.clear()
    with EventLog(tmp_path, writer=True, fsync=False, segment_bytes=1) as log:
        log.append(EVENTS, 3)
    assert synced == []


def test_any_event_type_and_a_torn_tail_of_user_events(tmp_path):
    from xserve.schema import EdgeKind, EdgeSet, UserEvent, UserUpserted

    events = [UserUpserted(1, "a"), EdgeSet(1, 2, EdgeKind.BLOCK), UserUpserted(2, "b")]
    with EventLog(tmp_path, writer=True, fsync=False, event_type=UserEvent) as log:
        log.append(events[:2], 10)
        log.append(events[2:], 11, sync=True)
    seg = next(tmp_path.glob("*.seg"))
    seg.write_bytes(seg.read_bytes()[:-3])  # a crash in the middle of the last record
    with EventLog(tmp_path, writer=True, fsync=False, event_type=UserEvent) as log:
        assert [e for _, _, e in log.read()] == events[:2]
        log.append([UserUpserted(3, "c")], 12)
    reader = EventLog(tmp_path, event_type=UserEvent)
    assert [e for _, _, e in reader.read()] == [*events[:2], UserUpserted(3, "c")]
    seen = []
    assert reader.replay(seen.append) == 3 and seen == [*events[:2], UserUpserted(3, "c")]


def test_sync_overrides_the_log_default_per_batch(tmp_path, monkeypatch):
    calls = []
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (calls.append(fd), real_fsync(fd)))
    with EventLog(tmp_path, writer=True, fsync=True) as log:
        calls.clear()
        log.append([created(post(1, 1, 100))], 100, sync=False)
        assert calls == []
        log.append([created(post(2, 1, 100))], 100)
        assert len(calls) == 1


# --------------------------------------------------------------------------- batches, cursors, the lock after a crash


@pytest.mark.parametrize("cut", [1, 30, 60])
def test_a_torn_batch_is_dropped_whole(tmp_path, cut):
    """A crash in the middle of a batch leaves none of it: readers stop before it, the writer truncates it."""
    with EventLog(tmp_path, writer=True, fsync=False) as log:
        log.append(EVENTS[:1], 100)
        whole = next(tmp_path.glob("*.seg")).stat().st_size
        log.append(EVENTS, 200)  # three records, one batch
    seg = next(tmp_path.glob("*.seg"))
    size = seg.stat().st_size
    assert size - whole > 60  # every cut leaves whole records of the batch behind, or some
    seg.write_bytes(seg.read_bytes()[: size - cut])
    assert [o for o, _, _ in EventLog(tmp_path).read()] == [0]
    cursor = LogCursor(tmp_path)
    assert [o for o, _, _ in cursor.poll()] == [0] and cursor.offset == 1
    with EventLog(tmp_path, writer=True, fsync=False) as log:
        assert seg.stat().st_size == whole and log.next_offset == 1
        log.append(EVENTS[1:2], 300)
    assert [(o, t) for o, t, _ in cursor.poll()] == [(1, 300)]


def test_cursor_reads_only_what_is_new_across_segments(tmp_path):
    log = EventLog(tmp_path, writer=True, fsync=False, segment_bytes=200)
    cursor = LogCursor(tmp_path, offset=0)
    assert cursor.poll() == []
    seen = []
    for t in range(1, 8):
        log.append(EVENTS, t)
        if t % 3 == 0:
            seen += cursor.poll()
    seen += cursor.poll()
    assert len(list(tmp_path.glob("*.seg"))) > 2
    assert [o for o, _, _ in seen] == list(range(21)) and [e for _, _, e in seen] == EVENTS * 7
    assert cursor.poll() == [] and cursor.offset == 21
    late = LogCursor(tmp_path, offset=17)  # starts mid-log: skips what came before
    assert [o for o, _, _ in late.poll()] == [17, 18, 19, 20]
    log.drop_before(10**9)
    dropped = LogCursor(tmp_path, offset=2)  # its segment is gone: it starts at the oldest kept record
    assert [o for o, _, _ in dropped.poll()][-1] == 20
    log.close()


def test_cursor_leaves_a_batch_being_written_for_later(tmp_path):
    log = EventLog(tmp_path, writer=True, fsync=False)
    log.append(EVENTS, 1)
    seg = next(tmp_path.glob("*.seg"))
    data = seg.read_bytes()
    seg.write_bytes(data[:-10])  # the writer is half way through the batch
    cursor = LogCursor(tmp_path)
    assert cursor.poll() == []
    seg.write_bytes(data)  # ... and finishes it
    assert [o for o, _, _ in cursor.poll()] == [0, 1, 2]
    log.close()


_HOLD = """
import sys, time
from xserve.storage.log.event_log import EventLog
log = EventLog(sys.argv[1], writer=True)
log.append([], 0)
print("locked", flush=True)
time.sleep(600)
"""


def test_the_lock_of_a_killed_writer_is_free_and_a_live_one_is_refused(tmp_path):
    import signal
    import subprocess
    import sys
    import time
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    holder = subprocess.Popen([sys.executable, "-c", _HOLD, str(tmp_path)], stdout=subprocess.PIPE, text=True,
                              env={**os.environ, "PYTHONPATH": str(root)})
    try:
        assert holder.stdout.readline().strip() == "locked"
        started = time.monotonic()
        with pytest.raises(EventLogLocked, match="waited 0.3 s"):
            EventLog(tmp_path, writer=True, lock_wait_s=0.3)  # a live writer: refused after the wait
        assert time.monotonic() - started >= 0.3
        holder.send_signal(signal.SIGKILL)
        holder.wait(10)
        with EventLog(tmp_path, writer=True, lock_wait_s=5.0) as log:  # kill -9 released it: no stale lock
            assert log.append(EVENTS[:1], 1) == (0, 1)
    finally:
        holder.kill()
        holder.wait(10)
