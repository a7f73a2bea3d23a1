from tests.thunder.factories import created, deleted, post
from xserve.schema import PostEvent
from xserve.storage.log.event_log import EventLog
from xserve.storage.log.log_tail import LogTail


def test_a_tail_resumes_from_its_watermark_and_finds_new_logs(tmp_path):
    a = EventLog(tmp_path / "logs" / "shard-0-of-2", writer=True, fsync=False)
    a.append(created(post(1, 7), post(2, 7)), 10)
    mark = tmp_path / "consumer" / "watermark.json"
    tail = LogTail(tmp_path / "logs", "shard-*", PostEvent, mark)
    assert [(n, o) for n, o, _, _ in tail.poll()] == [("shard-0-of-2", 0), ("shard-0-of-2", 1)]
    assert tail.lag() == 2 and not mark.exists()  # nothing is committed until the consumer says so
    b = EventLog(tmp_path / "logs" / "shard-1-of-2", writer=True, fsync=False)
    b.append([deleted(1)], 20)
    a.append(created(post(3, 7)), 30)
    assert sorted((n, o) for n, o, _, _ in tail.poll()) == [("shard-0-of-2", 2), ("shard-1-of-2", 0)]
    tail.commit(tail.positions(), version="v1")
    assert tail.lag() == 0

    # a crashed consumer restarts at its watermark: only what came after
    a.append(created(post(4, 7)), 40)
    again = LogTail(tmp_path / "logs", "shard-*", PostEvent, mark)
    assert again.committed == {"shard-0-of-2": 3, "shard-1-of-2": 1} and again.meta == {"version": "v1"}
    assert [(n, o, e.post.post_id) for n, o, _, e in again.poll()] == [("shard-0-of-2", 3, 4)]
    again.rewind()  # a failed apply: read it again
    assert [o for _, o, _, _ in again.poll()] == [3]
    again.rewind({})
    assert len(again.poll()) == 5
