"""Closing the loop (pure, no Ray): what was served and what users did with it, back into training.

Modules: ``impressions`` (the impression log each user-store shard writes after a feed is served, with
retention; reading it back), ``live_data`` (the engagements the API accepted, read from the user-store logs,
plus the seeded/imported table: what ``xserve train`` learns from), ``negatives`` (ranker negatives from
impressions that drew no engagement), ``compaction`` (bounds the data directory's logs on disk),
``cycle`` (the guardrail of continuous training). Model versions and their ``CURRENT`` pointer are in
``xserve.storage.model_versions``; the version poll both deployments use in ``xserve.storage.version_poll``.
"""
