"""Out-of-network retrieval logic, pure (no Ray): shard search, fan-out merge, live upserts. Post ids map to
shards by ``xserve.sharding``; the demo's clustered encoder is ``xserve.synth.encoder``.

Modules: ``protocols`` (the seams to the towers and the tables), ``merge`` (per-shard top-k → global top-k, plus the exact
reference), ``shard`` (one shard: filters, versions, maintenance), ``batcher``
(buffer created posts, embed and flush in batches), ``fanout`` (the one
fan-out over the shards, used in-process and by the Retrieval deployment), ``encoders`` and ``towers`` (the Phoenix towers adapter).
Ray shells live in ``xserve.actors.retrieval`` and ``xserve.deployments.retrieval``;
the LanceDB tables in ``xserve.storage.lance.embeddings``; the version poll in ``xserve.storage.version_poll``.
"""
