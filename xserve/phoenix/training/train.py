"""Training the ranker and the two towers from an engagement log.

``train(engagements, posts, config, out_dir)`` aggregates the log, splits it by
time, trains both models and writes ``ranker.pt`` / ``towers.pt`` to
``out_dir`` (the CLI uses ``<data_dir>/models``):

* **ranker**: multi-task BCE over the 18 actions on next-engagement examples
  (``data.RankerExamples``: positives with their multi-hot actions, sampled
  recent unengaged posts with all-zero labels, many candidates per history
  thanks to isolation) plus a dwell-time regression (log-seconds squared
  error) on candidates with a dwell;
* **towers**: contrastive, in-batch negatives plus (``train.tower_uniform_negatives``)
  posts sampled uniformly from the retrieval corpus window, with log-Q
  correction: logits ``u·c/τ − log q(c)`` where ``q`` is the column's proposal
  probability (``TowerNegatives``: its share of training positives for the
  in-batch draw, 1/window for the uniform one), so popular posts are not
  over-penalised; a user's other positives and repeats of the target post
  are masked out. ``τ`` is fixed or learned (``tower_learned_temperature``).

Hash tables train with ``SparseAdam`` (only the rows a batch touched), the
rest with ``AdamW``; linear warm-up then cosine decay. Deterministic for a
given ``TrainConfig.seed``: torch and numpy generators are seeded, example
order and negatives come from one ``numpy.random.Generator``, and
``torch.use_deterministic_algorithms`` is on while training.
"""

from __future__ import annotations

import contextlib
import math
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from xserve.config import XServeConfig
from xserve.phoenix.model.checkpoint import load_ranker, load_towers, save_checkpoint
from xserve.storage.layout import RANKER_FILE, TOWERS_FILE
from xserve.phoenix.training.data import (
    Entries,
    PostContent,
    PostCorpus,
    RankerExamples,
    TowerExamples,
    user_context_ids,
    aggregate,
    label_rates,
    split_time,
)
from xserve.phoenix.model.embeddings import HashEmbedding, PhoenixHasher
from xserve.phoenix.model.features import Featurizer
from xserve.phoenix.model.ranker import PhoenixRanker
from xserve.phoenix.model.towers import PhoenixTowers
from xserve.schema import ACTION_INDEX, Action

__all__ = [
    "RANKER_FILE",
    "TOWERS_FILE",
    "Prepared",
    "TowerNegatives",
    "TrainResult",
    "corpus_max_age_ms",
    "deterministic",
    "initial_head_bias",
    "load_ranker",
    "load_towers",
    "machine_num_threads",
    "negatives_max_age_ms",
    "prepare",
    "ranker_loss",
    "resolve_num_threads",
    "train",
    "train_ranker",
    "train_towers",
]

_DWELL = ACTION_INDEX[Action.DWELL]


@dataclass
class Prepared:
    """The aggregated log, its time split and the corpus, shared by training and evaluation."""

    entries: Entries
    corpus: PostCorpus
    split_ms: int
    featurizer: Featurizer
    config: XServeConfig
    impression_negatives: Any | None = None  # xserve.loop.negatives.ImpressionNegatives when loop.negatives = "impressions"

    @property
    def hasher(self) -> PhoenixHasher:
        return self.featurizer.hasher


def prepare(engagements: Any, posts: Any | None, config: XServeConfig,
            featurizer: Featurizer | None = None, split_ms: int | None = None, users: Any | None = None,
            impressions: dict[str, Any] | None = None) -> Prepared:
    """Aggregate ``engagements`` (a table, see ``data``) and split it by time.

    To train, leave ``featurizer`` and ``split_ms`` out: fresh hashes for ``config.phoenix`` (with the
    post-age feature off when the log has no creation time at all: the model then sees every age as
    unknown, in training and when served) and the split from ``train.validation_fraction``. To
    evaluate a trained model, pass its featurizer and the split recorded in its checkpoint, so that
    validation never holds a row it was trained on, whatever the data or config say now.
    ``impressions`` (``xserve.loop.impressions.impression_arrays``) supply the ranker's negatives when
    ``loop.negatives`` is ``"impressions"``.
    """
    entries = aggregate(engagements, config.mixer.history_window_ms)
    if featurizer is None:
        pc = config.phoenix
        if entries.created_share == 0.0:
            pc = msgspec.structs.replace(pc, post_age=False)
        featurizer = Featurizer(pc, PhoenixHasher(pc))
    config = msgspec.structs.replace(config, phoenix=featurizer.config)
    if split_ms is None:
        split_ms = split_time(entries, config.train.validation_fraction)
    entries.user_context = user_context_ids(entries, users, featurizer)  # the users table's context, if it has one
    corpus = PostCorpus.build(entries, posts)
    content = PostContent.build(posts, featurizer.config.max_content_tokens)  # the posts' texts, as serving reads them
    entries.content, corpus.content = content.of(entries.post), content.of(corpus.post)
    negatives = None
    if impressions is not None and config.loop.negatives == "impressions":
        from xserve.loop.negatives import ImpressionNegatives

        negatives = ImpressionNegatives.build(impressions["user_id"], impressions["post_id"],
                                              impressions["served_at_ms"], entries.user, entries.post, corpus.post)
    return Prepared(entries=entries, corpus=corpus, split_ms=split_ms, featurizer=featurizer, config=config,
                    impression_negatives=negatives)


def resolve_num_threads(setting: int | str, available_cores: int, load_1min: float) -> int:
    """Torch threads for ``train.num_threads``: a number as given; ``auto`` = the cores available to the
    process, but 1 when the 1-minute load average already fills them (a shared box: contended OpenMP
    threads spin, and 2 threads ran 3-20x slower than 1 on a busy 2-core machine)."""
    if setting != "auto":
        if not isinstance(setting, int) or setting < 1:
            raise ValueError(f"train.num_threads must be a positive integer or 'auto', got {setting!r}")
        return setting
    cores = max(1, available_cores)
    return 1 if load_1min >= cores else cores


def machine_num_threads(setting: int | str) -> int:
    """``resolve_num_threads`` for this process: its CPU affinity and the machine's load average now."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    try:
        load = os.getloadavg()[0]
    except OSError:  # no load average: assume the box is ours
        load = 0.0
    return resolve_num_threads(setting, cores, load)


def initial_head_bias(data: Prepared) -> np.ndarray:
    """(A,) log-odds of each action's rate among training candidates, from training rows only."""
    tc = data.config.train
    rates = label_rates(data.entries, data.split_ms) * tc.ranker_positives / (tc.ranker_positives + tc.ranker_negatives)
    rates = np.clip(rates, 1e-5, 1 - 1e-5)
    return np.log(rates / (1 - rates))


def initial_duration_bias(data: Prepared) -> np.ndarray:
    """(3,) the duration head's initial bias: softplus⁻¹ of each duration's median over the training rows that
    carry it (1 s when none does), so the head starts at a typical value instead of softplus(0) ≈ 0.7 s."""
    e = data.entries
    out = np.full(3, np.log(np.expm1(1.0)), np.float32)
    if e.durations_ms is None:
        return out
    d = e.durations_ms[e.ts < data.split_ms] / 1000.0
    for j in range(d.shape[1]):
        seen = d[:, j][d[:, j] > 0]
        if len(seen):
            median = float(np.median(seen))
            out[j] = median + np.log(-np.expm1(-median))  # softplus⁻¹(y) = y + log(1 − e^(−y)), stable
    return out


@contextlib.contextmanager
def deterministic(seed: int, num_threads: int) -> Iterator[np.random.Generator]:
    """Seed torch, fix the thread count and require deterministic kernels; restore on exit."""
    prev_threads = torch.get_num_threads()
    prev_det = torch.are_deterministic_algorithms_enabled()
    prev_warn = torch.is_deterministic_algorithms_warn_only_enabled()
    torch.set_num_threads(max(1, num_threads))
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.manual_seed(seed)
    try:
        yield np.random.default_rng(seed)
    finally:
        torch.set_num_threads(prev_threads)
        torch.use_deterministic_algorithms(prev_det, warn_only=prev_warn)


def _optimizers(model: nn.Module, config: XServeConfig, total_steps: int):
    tc = config.train
    sparse_ids = {id(p) for m in model.modules() if isinstance(m, HashEmbedding) for p in m.parameters()}
    sparse = [p for p in model.parameters() if id(p) in sparse_ids]
    dense = [p for p in model.parameters() if id(p) not in sparse_ids]
    decay = [p for p in dense if p.dim() >= 2]
    no_decay = [p for p in dense if p.dim() < 2]
    opts = [
        torch.optim.AdamW([{"params": decay, "weight_decay": tc.weight_decay},
                           {"params": no_decay, "weight_decay": 0.0}], lr=tc.learning_rate),
        torch.optim.SparseAdam(sparse, lr=tc.embedding_learning_rate),
    ]
    warm = max(1, min(tc.warmup_steps, total_steps // 10))

    def factor(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        progress = min(1.0, (step - warm) / max(1, total_steps - warm))
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress))

    scheds = [torch.optim.lr_scheduler.LambdaLR(o, factor) for o in opts]
    return opts, scheds


def _epoch_rows(lengths: np.ndarray, cap: int, batch: int, rng: np.random.Generator) -> list[np.ndarray]:
    """A random subset (``cap``, 0 = all) cut into batches of similar history length, in random order.

    Sorting windows of 32 batches by length before cutting keeps per-batch padding (each batch is
    trimmed to its longest history) small without giving up shuffling.
    """
    rows = rng.permutation(len(lengths))
    if cap and len(rows) > cap:
        rows = rows[:cap]
    window = 32 * batch
    batches = []
    for i in range(0, len(rows), window):
        chunk = rows[i : i + window]
        chunk = chunk[np.argsort(lengths[chunk], kind="stable")]
        batches += [chunk[j : j + batch] for j in range(0, len(chunk), batch)]
    return [batches[k] for k in rng.permutation(len(batches))]


def ranker_loss(model: PhoenixRanker, batch: tuple, dwell_weight: float, durations: np.ndarray | None = None,
                duration_weight: float = 0.0) -> tuple[torch.Tensor, float]:
    """Mean over valid candidates of the summed per-action BCE, plus the weighted dwell loss, plus the weighted
    duration losses: each of the three durations (``(B, C, 3)`` seconds) a log-seconds squared error over the
    candidates whose ``DURATION_ACTIONS`` action happened with a duration (the head predicts it given the action)."""
    ctx, cand, labels, dwell = batch
    out = model.score_candidates(model.encode_context(ctx), cand)  # == model(ctx, cand), less attention work
    labels_t, dwell_t = torch.from_numpy(labels), torch.from_numpy(dwell)
    valid = cand.valid.to(out.logits.dtype)  # (B, C)
    bce = F.binary_cross_entropy_with_logits(out.logits, labels_t, reduction="none").sum(-1)  # (B, C)
    bce = (bce * valid).sum() / valid.sum().clamp_min(1)
    has_dwell = (dwell_t > 0).to(valid.dtype) * valid
    sq = (torch.log1p(out.dwell_s) - torch.log1p(dwell_t)).pow(2)
    dwell_loss = (sq * has_dwell).sum() / has_dwell.sum().clamp_min(1)
    loss = bce + dwell_weight * dwell_loss
    if durations is not None and duration_weight and out.durations_s is not None:
        d = torch.from_numpy(durations)  # (B, C, 3)
        has = (d > 0).to(valid.dtype) * valid[..., None]
        sq = (torch.log1p(out.durations_s) - torch.log1p(d)).pow(2)
        loss = loss + duration_weight * ((sq * has).sum((0, 1)) / has.sum((0, 1)).clamp_min(1)).mean()
    return loss, float(bce.detach())


def _run_epochs(model: nn.Module, config: XServeConfig, make_examples, step_fn, cap: int, name: str,
                rng: np.random.Generator, progress: bool, num_epochs: int | None = None) -> list[float]:
    """Generic loop: ``make_examples(rng)`` each epoch (``num_epochs``, default ``train.epochs``),
    ``step_fn(examples, rows) -> (loss, logged)``."""
    tc = config.train
    epochs = [make_examples(rng) for _ in range(num_epochs or tc.epochs)]
    batches = [_epoch_rows(ex.hist_len, cap, tc.batch_size, rng) for ex in epochs]
    total = sum(len(b) for b in batches)
    if total == 0:
        raise ValueError(f"no {name} training examples: the log needs users with several engagements")
    opts, scheds = _optimizers(model, config, total)
    dense = [p for p in model.parameters() if not any(p is q for g in opts[1].param_groups for q in g["params"])]
    model.train()
    losses: list[float] = []
    with tqdm(total=total, desc=f"train {name}", disable=not progress, unit="batch") as bar:
        for ex, rows_list in zip(epochs, batches, strict=True):
            for rows in rows_list:
                loss, logged = step_fn(ex, rows)
                for o in opts:
                    o.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(dense, 1.0)  # hash-table gradients are sparse: Adam-scaled anyway
                for o, s in zip(opts, scheds, strict=True):
                    o.step()
                    s.step()
                losses.append(logged)
                bar.update(1)
                bar.set_postfix(loss=f"{np.mean(losses[-50:]):.4f}")
    model.eval()
    return losses


def train_ranker(data: Prepared, rng: np.random.Generator, progress: bool = False) -> tuple[PhoenixRanker, dict[str, Any]]:
    cfg, tc = data.config, data.config.train
    model = PhoenixRanker(cfg.phoenix)
    with torch.no_grad():
        model.action_head.bias.copy_(torch.from_numpy(initial_head_bias(data)).float())
        model.duration_head.bias.copy_(torch.from_numpy(initial_duration_bias(data)).float())

    def make(r: np.random.Generator) -> RankerExamples:
        return ranker_examples(data, r, validation=False)

    def step(ex: RankerExamples, rows: np.ndarray):
        return ranker_loss(model, ex.batch(rows, data.featurizer), tc.dwell_loss_weight, ex.durations(rows),
                           tc.duration_loss_weight)

    losses = _run_epochs(model, cfg, make, step, tc.ranker_examples_per_epoch, "ranker", rng, progress)
    metrics = {"train_bce_first": float(np.mean(losses[:20])), "train_bce_last": float(np.mean(losses[-20:])),
               "steps": len(losses)}
    val = ranker_examples(data, rng, validation=True)
    if len(val):
        rows = np.arange(min(len(val), 4 * tc.batch_size))
        with torch.no_grad():
            vals = [ranker_loss(model, val.batch(r, data.featurizer), 0.0)[1]
                    for r in np.array_split(rows, max(1, len(rows) // tc.batch_size))]
        metrics["val_bce"] = float(np.mean(vals))
    return model, metrics


def ranker_examples(data: Prepared, rng: np.random.Generator, validation: bool) -> RankerExamples:
    """The ranker's examples of ``data``: its training examples (with the impression negatives, when training
    uses them), or the held-out ones after its recorded split, which the validation loss and ``xserve evaluate``
    score. One builder, so that both see the examples training sees."""
    cfg, tc = data.config, data.config.train
    return RankerExamples.build(data.entries, data.corpus, split_ms=data.split_ms, validation=validation,
                                num_pos=tc.ranker_positives, num_neg=tc.ranker_negatives,
                                history_len=cfg.phoenix.history_len, max_age_ms=negatives_max_age_ms(cfg), rng=rng,
                                trim_block=cfg.mixer.history_trim_block,
                                impression_negatives=None if validation else data.impression_negatives)


def negatives_max_age_ms(config: XServeConfig) -> int:
    """The recency window of sampled negatives (ranker training and evaluation): ``train.negatives_max_age_ms``,
    0 = the feed's ``mixer.max_post_age_ms``."""
    return config.train.negatives_max_age_ms or config.mixer.max_post_age_ms


def corpus_max_age_ms(config: XServeConfig) -> int:
    """The retrieval corpus window (evaluation, the towers' uniform negatives): ``train.corpus_max_age_ms``,
    0 = the feed's ``mixer.max_post_age_ms``."""
    return config.train.corpus_max_age_ms or config.mixer.max_post_age_ms


class TowerNegatives:
    """The columns of the towers' softmax: every positive in the batch plus ``K`` corpus posts sampled
    uniformly from the retrieval window of the batch's queries (mixed negative sampling), each with the
    log of its proposal probability for the log-Q correction.

    A column's proposal probability under the mixture is ``(M·f(c) + K/W) / (M + K)``: ``f(c)`` the post's
    share of training positives (how often it turns up in-batch, popular posts far more) and ``1/W`` the
    chance a uniform draw picks it from a window of ``W`` posts. Subtracting its log from the logit keeps
    the softmax an unbiased estimate of the full-corpus one, so popular posts are not over-penalised and
    the uniform columns teach the tail (the fresh posts retrieval searches) that positives rarely reach.
    """

    def __init__(self, positives: np.ndarray, corpus: PostCorpus, num_uniform: int, max_age_ms: int) -> None:
        self.post, counts = np.unique(positives, return_counts=True)
        self.freq = counts / max(counts.sum(), 1)
        self.corpus, self.num_uniform, self.max_age_ms = corpus, num_uniform, max_age_ms

    def in_batch_freq(self, post: np.ndarray) -> np.ndarray:
        at = np.minimum(np.searchsorted(self.post, post), len(self.post) - 1)
        return np.where(self.post[at] == post, self.freq[at], 0.0)

    def uniform(self, ref_ms: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, float]:
        """``K`` corpus rows, each from the window of a random query time in ``ref_ms``, and the mean window size."""
        if self.num_uniform == 0 or len(self.corpus) == 0:
            return np.zeros(0, np.int64), 1.0
        ref = ref_ms[rng.integers(0, len(ref_ms), self.num_uniform)]
        rows = self.corpus.sample_recent(ref, self.max_age_ms, rng)
        c = self.corpus.created
        width = np.searchsorted(c, ref, side="right") - np.searchsorted(c, ref - self.max_age_ms, side="left")
        return rows[rows >= 0], float(max(width.mean(), 1.0))


def tower_loss(model: PhoenixTowers, ex: TowerExamples, rows: np.ndarray, featurizer: Featurizer,
               negatives: TowerNegatives, temperature: torch.Tensor | float,
               rng: np.random.Generator | None = None) -> torch.Tensor:
    """Softmax over the batch's positives and uniform corpus negatives, log-Q corrected, false negatives masked."""
    e = ex.entries
    pos = ex.pos_idx[rows]  # (B, Q)
    row, slot = np.nonzero(pos >= 0)
    idx = pos[row, slot]  # (M,) entries
    post, author = e.post[idx], e.author[idx]
    uni, width = negatives.uniform(e.ts[idx], rng) if rng is not None else (np.zeros(0, np.int64), 1.0)
    c = negatives.corpus
    col_post, col_author = np.r_[post, c.post[uni]], np.r_[author, c.author[uni]]  # (M + K,)
    users = model.user_embeddings(ex.context(rows, featurizer))  # (B, D)
    h = featurizer.hasher
    cands = model.candidate_embeddings(torch.from_numpy(h("post", col_post)), torch.from_numpy(h("author", col_author)))
    m, k = len(idx), len(uni)
    q = (m * negatives.in_batch_freq(col_post) + k / width) / (m + k)
    logits = users[row] @ cands.T / temperature - torch.from_numpy(np.log(np.maximum(q, 1e-12))).float()  # (M, M+K)
    # a column is a false negative for target m if it is the same post or another positive of the same user
    same = (post[:, None] == col_post[None, :])
    same[:, :m] |= row[:, None] == row[None, :]
    if k:
        user_pos = np.where(pos >= 0, e.post[np.maximum(pos, 0)], -1)  # (B, Q) each row's positive posts
        taken = (user_pos[:, :, None] == c.post[uni][None, None, :]).any(1)  # (B, K)
        same[:, m:] |= taken[row]
    same[np.arange(m), np.arange(m)] = False
    logits = logits.masked_fill(torch.from_numpy(same), float("-inf"))
    return F.cross_entropy(logits, torch.arange(m))


def train_towers(data: Prepared, rng: np.random.Generator, progress: bool = False) -> tuple[PhoenixTowers, dict[str, Any]]:
    cfg, tc = data.config, data.config.train
    model = PhoenixTowers(cfg.phoenix)
    if tc.tower_post_init_std != 1.0:  # a post never trained then stays near 0 and its author's embedding decides
        with torch.no_grad():
            model.embeddings.post.table.weight.normal_(0.0, tc.tower_post_init_std)
            model.embeddings.post.table.weight[0].zero_()
    # log(1/τ), learned when asked (a dense parameter the optimiser sees only then), clamped to τ in [0.01, 1]
    log_inv_temp = nn.Parameter(torch.tensor(-math.log(tc.tower_temperature)), requires_grad=tc.tower_learned_temperature)
    if tc.tower_learned_temperature:
        model.register_parameter("log_inv_temperature", log_inv_temp)
    negatives: list[TowerNegatives] = []

    def make(r: np.random.Generator) -> TowerExamples:
        ex = TowerExamples.build(data.entries, split_ms=data.split_ms, validation=False,
                                 num_pos=tc.tower_positives, history_len=cfg.phoenix.history_len, rng=r,
                                 trim_block=cfg.mixer.history_trim_block)
        if not negatives:
            negatives.append(TowerNegatives(ex.entries.post[ex.pos_idx[ex.pos_idx >= 0]], data.corpus,
                                            tc.tower_uniform_negatives, corpus_max_age_ms(cfg)))
        return ex

    def step(ex: TowerExamples, rows: np.ndarray):
        inv_temp = log_inv_temp.clamp(0.0, math.log(100.0)).exp()
        loss = tower_loss(model, ex, rows, data.featurizer, negatives[0], 1.0 / inv_temp, rng)
        return loss, float(loss.detach())

    losses = _run_epochs(model, cfg, make, step, tc.tower_examples_per_epoch, "towers", rng, progress, tc.tower_epochs)
    if tc.tower_learned_temperature:
        del model.log_inv_temperature  # a training device only: the towers' outputs are unit vectors either way
    return model, {"train_loss_first": float(np.mean(losses[:20])), "train_loss_last": float(np.mean(losses[-20:])),
                   "steps": len(losses), "temperature": float(1.0 / log_inv_temp.detach().clamp(0.0, math.log(100.0)).exp())}


@dataclass
class TrainResult:
    ranker: PhoenixRanker
    towers: PhoenixTowers
    data: Prepared
    metrics: dict[str, Any] = field(default_factory=dict)
    paths: dict[str, Path] = field(default_factory=dict)


def train(engagements: Any, posts: Any | None, config: XServeConfig, out_dir: str | Path | None = None,
          progress: bool = False, num_threads: int | None = None, users: Any | None = None,
          impressions: dict[str, Any] | None = None) -> TrainResult:
    """Train both models on the log; save ``ranker.pt`` and ``towers.pt`` under ``out_dir`` when given.
    ``users``: a users table whose context columns (``data.USER_CONTEXT_COLUMNS``) are the users' context input.

    ``num_threads`` defaults to ``train.num_threads`` resolved on this machine (``machine_num_threads``).
    """
    t0 = time.perf_counter()
    tc = config.train
    threads = num_threads if num_threads is not None else machine_num_threads(tc.num_threads)
    with deterministic(tc.seed, threads) as rng:
        data = prepare(engagements, posts, config, users=users, impressions=impressions)
        t1 = time.perf_counter()
        ranker, rm = train_ranker(data, rng, progress)
        t2 = time.perf_counter()
        towers, tm = train_towers(data, rng, progress)
        t3 = time.perf_counter()
    metrics = {
        "entries": len(data.entries), "users": len(data.entries.starts), "posts": len(data.corpus),
        "split_ms": data.split_ms, "threads": threads, "ranker": rm, "towers": tm,
        "seconds": {"prepare": t1 - t0, "ranker": t2 - t1, "towers": t3 - t2},
    }
    result = TrainResult(ranker=ranker, towers=towers, data=data, metrics=metrics)
    if out_dir is not None:
        out = Path(out_dir)
        # the split is part of the model: evaluation reads it back (never recomputes it from today's data)
        extra = {"train_config": msgspec.to_builtins(config.train), "split_ms": data.split_ms,
                 "train_entries": int((data.entries.ts < data.split_ms).sum())}
        metrics["versions"] = {  # the checkpoints' version strings (what serving reports as model_version)
            "ranker": save_checkpoint(out / RANKER_FILE, "ranker", ranker, data.hasher, {**rm, **metrics["seconds"]}, extra),
            "towers": save_checkpoint(out / TOWERS_FILE, "towers", towers, data.hasher, {**tm, **metrics["seconds"]}, extra),
        }
        result.paths = {"ranker": out / RANKER_FILE, "towers": out / TOWERS_FILE}
    return result

