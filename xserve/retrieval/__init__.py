"""Out-of-network retrieval logic, pure (no Ray): shard search, fan-out merge, live upserts.

Modules: ``protocols`` (the seams to the towers and the tables), ``routing``
(post id → shard), ``merge`` (per-shard top-k → global top-k, plus the exact
reference), ``shard`` (one shard: filters, versions, maintenance), ``batcher``
(buffer created posts, embed and flush in batches), ``version_poll`` (the
current version without a file read per query), ``service`` (in-process
fan-out satisfying the mixer's retrieval Protocol), ``synthetic`` (a clustered
stand-in encoder), ``encoders`` and ``towers`` (the Phoenix towers adapter).
Ray shells live in ``xserve.actors.retrieval`` and ``xserve.deployments.retrieval``;
the LanceDB tables in ``xserve.storage.embeddings``.
"""
