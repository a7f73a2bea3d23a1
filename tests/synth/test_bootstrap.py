"""The first run's data directory: what ``prepare_data_dir`` leaves for Thunder."""

from xserve.config import StorageConfig, ThunderConfig
from xserve.schema import PostCreated
from xserve.thunder.ingest import open_event_log


def test_thunders_first_log_carries_the_refs_its_replies_and_reposts_need(tiny_world):
    # A Thunder shard holds only its own authors' posts: a reply must carry what the reply rule reads of its parent.
    log = open_event_log(StorageConfig(data_dir=str(tiny_world)), ThunderConfig(), writer=False)
    try:
        posts = {e.post.post_id: e.post for _, _, e in log.read() if isinstance(e, PostCreated)}
    finally:
        log.close()
    replies = [p for p in posts.values() if p.in_reply_to_post_id in posts]
    reposts = [p for p in posts.values() if p.repost_of_post_id in posts]
    assert replies and reposts
    assert all(p.reply_parent.created_at_ms == posts[p.in_reply_to_post_id].created_at_ms for p in replies)
    assert all(p.repost_source.created_at_ms == posts[p.repost_of_post_id].created_at_ms for p in reposts)
