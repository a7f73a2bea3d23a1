from __future__ import annotations

from xserve.schema import EdgeKind, EdgeSet, UserEvent, UserUpserted
from xserve.storage.journal import Journal


def test_appended_events_replay_in_order(tmp_path):
    j = Journal(tmp_path / "u.log", UserEvent, fsync=False)
    assert list(j.replay()) == []
    events = [UserUpserted(1, "a"), EdgeSet(1, 2, EdgeKind.BLOCK), UserUpserted(2, "b")]
    j.append(events[:2])
    j.append(events[2:])
    j.close()
    assert list(Journal(tmp_path / "u.log", UserEvent).replay()) == events


def test_a_torn_tail_is_cut_and_appends_continue(tmp_path):
    path = tmp_path / "u.log"
    j = Journal(path, UserEvent, fsync=False)
    j.append([UserUpserted(1, "a"), UserUpserted(2, "b")])
    j.close()
    path.write_bytes(path.read_bytes()[:-3])  # a crash in the middle of the last record
    j = Journal(path, UserEvent, fsync=False)
    assert list(j.replay()) == [UserUpserted(1, "a")]
    j.append([UserUpserted(3, "c")])
    j.close()
    assert list(Journal(path, UserEvent).replay()) == [UserUpserted(1, "a"), UserUpserted(3, "c")]
