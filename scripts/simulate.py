"""Closed-loop simulator: a synthetic world's users read their feeds over HTTP, act on them, and the model retrains.

    python scripts/simulate.py                       # a fresh small world: seed, train, serve, simulate, retrain
    python scripts/simulate.py --size medium         # the goal run
    python scripts/simulate.py --url http://127.0.0.1:8000 --data-dir DIR   # drive a running server (no retrain)
    python scripts/simulate.py --data-dir DIR        # a seeded, trained world of yours (copied): serve, simulate, retrain

Readers are users of the world (``--users``, drawn with ``--seed``). A session reads up to ``--pages``
pages of ``--page-size`` posts; each page is a fresh ``POST /v1/feed/for_you`` (``seen_ids`` = the posts
already shown in the session). The ``ranker`` policy asks for ``--page-size`` posts, as a client does, and
shows the served order; every engagement carries the request id of the feed that showed its post. The other
policies ask for
``--candidates`` posts (the server's filtered candidates in the served order: the app this script starts
serves ``mixer.top_k`` and ``serving.max_feed_limit = --candidates``, by default every candidate, so that no
policy reorders a list the ranker chose) and show the first ``--page-size`` of them in their own order:

* ``recency``: newest first (the ranker-down fallback's order); ``random``: a seeded shuffle;
* ``oracle``: the served value model's sum (``xserve.mixer.value_model.combined_scores``: the same weights,
  gates and boosts) over the world's true probabilities and expected durations
  (``TrueActionModel.value_inputs``) instead of the ranker's predictions: the ceiling of the ranking stage.

The ranker's page is the top of the same list the others reorder (the one order, cut at the page size).

The reader (``xserve.synth.behaviour.BehaviourModel``) reads top down with attention decaying by position,
draws actions and dwell from the world's ground truth, and the script sends them back:
``POST /v1/impressions`` (the posts the reader viewed of each page, under every policy: what a client had on
screen), ``POST /v1/engagements`` (one batch per page, carrying each post's ``prediction_request_id``) and,
for blocks and mutes, ``PUT /v1/users/{id}/blocks|mutes/{author}``. Between sessions authors keep posting
(``POST /v1/posts``, one post every ``--post-every`` sessions, made known to the ground truth).

Every policy runs on the same users with the same random numbers: a session's generator is seeded by
(``--seed``, user, session), whatever the policy, and each user runs the policies back to back in an
order rotated per user, so that time, new posts and the feedback the earlier policies sent fall on
every policy alike. Each figure comes with its standard error over sessions (``<figure>_se``), with its
expectation given the posts viewed (``expected_*``: the world's probabilities instead of the draws), and
the ranker is compared with each other policy as paired ratios (``sim.ranker_over_<policy>.*``).

Then, unless ``--no-retrain`` (or ``--url``), the app keeps serving while the model retrains on the
traffic it logged and goes live by a hot swap: ``xserve train`` (the seeded engagements plus the live
ones; ``--retrain-negatives``) writes version ``sim-retrained`` and switches ``models/CURRENT`` (the
Ranker replicas follow it), ``scripts/backfill_embeddings.py`` re-embeds the corpus, the posts created
during the run included, with its candidate tower and switches ``embeddings/CURRENT`` (retrieval follows
with the paired user tower); once feeds name the new version every policy runs again
(``sim.retrained.*`` for the ranker, ``sim.retrained.<policy>.*`` for the others), then
``sim.retrain_gain.*`` (retrained ranker / ranker before, paired).

Prints one ``name value unit`` line per figure on stdout; progress goes to stderr.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import numpy as np

if __package__ in (None, ""):  # run as a file: make `scripts.chaoslib` importable from the checkout
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from scripts.chaoslib.app_process import ROOT, AppProcess  # noqa: E402
from scripts.load_test import _loopback  # noqa: E402
from xserve import clock  # noqa: E402
from xserve.config import ScoringConfig  # noqa: E402
from xserve.mixer.value_model import ValueModel, combined_scores  # noqa: E402
from xserve.schema import ACTIONS, Action  # noqa: E402
from xserve.storage.layout import DataDirLayout  # noqa: E402
from xserve.storage.model_versions import ModelVersions  # noqa: E402
from xserve.synth.behaviour import BehaviourConfig, BehaviourModel, PageReading, SessionTally  # noqa: E402
from xserve.synth.oracle import TrueActionModel  # noqa: E402

POLICIES = ("ranker", "recency", "random", "oracle")
RETRAINED = "sim-retrained"  # the retrain's model and embedding version
FIGURES = ("engagement_rate", "negative_rate", "dwell_s_per_session", "unregretted_s_per_session")
_EDGE_OF = {Action.BLOCK_AUTHOR: "blocks", Action.MUTE_AUTHOR: "mutes"}  # actions that also write a graph edge


def progress(message: str) -> None:
    print(f"[simulate {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- policies


class Policies:
    """Orders one feed response's posts per policy (all client side, over the same candidate list)."""

    def __init__(self, truth: TrueActionModel, scoring: ScoringConfig = ScoringConfig()) -> None:
        self.truth, self.scoring = truth, scoring

    def order(self, policy: str, rng: np.random.Generator, user_id: int, posts: list[dict], now_ms: int) -> np.ndarray:
        """Indices into ``posts`` (served order) in ``policy``'s order."""
        n = len(posts)
        post_ids = np.array([p["post_id"] for p in posts], dtype=np.int64)
        if policy == "ranker":
            return np.arange(n)
        if policy == "random":
            return rng.permutation(n)
        if policy == "recency":
            gt = self.truth.gt
            at = np.minimum(np.searchsorted(gt["post_ids"], post_ids), len(gt["post_ids"]) - 1)
            created = np.where(gt["post_ids"][at] == post_ids, gt["post_created_at_ms"][at], 0)  # unknown: last
            return np.argsort(-created, kind="stable")
        if policy == "oracle":
            return np.argsort(-self.oracle_scores(user_id, posts, now_ms), kind="stable")
        raise ValueError(f"unknown policy {policy!r}; known: {', '.join(POLICIES)}")

    def oracle_scores(self, user_id: int, posts: list[dict], now_ms: int) -> np.ndarray:
        """The served value model's sum (``combined_scores``: the same weights, gates and mutual-follow boosts)
        over the world's true probabilities and expected durations instead of the ranker's predictions."""
        post_ids = np.array([p["post_id"] for p in posts], dtype=np.int64)
        n = len(post_ids)
        truth = self.truth.value_inputs(np.full(n, user_id), post_ids, np.full(n, now_ms))
        original = np.array([p.get("in_reply_to_post_id") is None and p.get("repost_of_post_id") is None
                             for p in posts], dtype=bool)
        return combined_scores(ValueModel(self.scoring, user_id), truth["scores"],
                               truth["video_ms"] > self.scoring.min_video_duration_ms, truth["has_link"],
                               truth["mutual"] & original, np.zeros(n, dtype=bool))


# --------------------------------------------------------------------------- one simulation pass


class Simulator:
    """Runs sessions against ``url`` and keeps a :class:`SessionTally` per policy."""

    def __init__(self, http: httpx.Client, truth: TrueActionModel, behaviour: BehaviourModel, args,
                 users: np.ndarray) -> None:
        self.http, self.truth, self.behaviour, self.args, self.users = http, truth, behaviour, args, users
        self.policies = Policies(truth)
        self.next_post_id = clock.now_ms() * 1_000  # above every seeded id and every earlier run's (ms-based)
        self.sessions_run = 0
        self.feeds = 0
        self.posts_created = 0
        self.errors = 0

    def run(self, policies: tuple[str, ...], label: str) -> dict[str, SessionTally]:
        tallies = {p: SessionTally(self.behaviour.config.regret_s) for p in policies}
        started = time.perf_counter()
        for i, user in enumerate(self.users.tolist()):
            for k in range(len(policies)):
                policy = policies[(i + k) % len(policies)]  # rotated: no policy always goes first
                for session in range(self.args.sessions):
                    self.session(policy, user, session, tallies[policy])
                    self.sessions_run += 1
                    if self.args.post_every and self.sessions_run % self.args.post_every == 0:
                        self.author_posts()
            if (i + 1) % max(1, len(self.users) // 10) == 0 or i + 1 == len(self.users):
                progress(f"{label}: {i + 1}/{len(self.users)} users, {time.perf_counter() - started:.0f} s, "
                         f"{self.errors} request errors")
        return tallies

    def session(self, policy: str, user: int, session: int, tally: SessionTally) -> None:
        rng = np.random.default_rng([self.args.seed, user, session])  # the same numbers under every policy
        policy_rng = np.random.default_rng([self.args.seed, user, session, 1])
        shown: list[int] = []
        tally.start_session()
        for _ in range(self.args.pages):
            # the ranker's page is what a client asks for; the other policies reorder the server's longer candidate
            # list client side (docs/simulation.md); every policy reports what its reader viewed (send)
            posts = self.feed(user, shown, self.args.page_size if policy == "ranker" else self.args.candidates)
            if not posts:
                return
            now_ms = clock.now_ms()
            ids = np.array([p["post_id"] for p in posts], dtype=np.int64)
            page = self.policies.order(policy, policy_rng, user, posts, now_ms)[: self.args.page_size]
            reading = self.behaviour.read(rng, user, ids[page], now_ms)
            tally.add(reading)
            self.send(user, [posts[j] for j in page[: len(reading.viewed)]], reading, now_ms)
            shown.extend(ids[page].tolist())
            if not reading.read_on:
                return

    def feed(self, user: int, shown: list[int], limit: int) -> list[dict]:
        body = {"viewer_id": user, "limit": limit, "seen_ids": shown[-1000:]}
        try:
            response = self.http.post("/v1/feed/for_you", json=body)
            response.raise_for_status()
        except httpx.HTTPError as exc:
            self.errors += 1
            progress(f"feed of user {user} failed: {exc}")
            return []
        self.feeds += 1
        return response.json()["posts"]

    def send(self, user: int, posts: list[dict], reading: PageReading, now_ms: int) -> None:
        batch, edges = [], []
        for post, hits, dwell_ms in zip(posts, reading.actions, reading.dwell_ms.tolist()):
            for a in np.flatnonzero(hits).tolist():
                action = ACTIONS[a]
                batch.append({"user_id": user, "post_id": post["post_id"], "author_id": post["author_id"],
                              "action": action.value, "timestamp_ms": now_ms,
                              "dwell_ms": dwell_ms if action is Action.DWELL else 0,
                              "prediction_request_id": post.get("prediction_request_id")})
                if action in _EDGE_OF and post["author_id"] != user:
                    edges.append(f"/v1/users/{user}/{_EDGE_OF[action]}/{post['author_id']}")
        # what the reader viewed (the attention draws), as a client reports what it had on screen: the server's
        # impressions of this feed are then these posts, not every candidate it returned (docs/loop.md)
        seen = {"viewer_id": user, "request_id": posts[0].get("prediction_request_id"),
                "post_ids": [post["post_id"] for post in posts]} if posts else None
        try:
            if seen is not None and seen["request_id"]:
                self.http.post("/v1/impressions", json=seen).raise_for_status()
            if batch:
                self.http.post("/v1/engagements", json=batch).raise_for_status()
            for path in edges:
                self.http.put(path).raise_for_status()
        except httpx.HTTPError as exc:
            self.errors += 1
            progress(f"engagements of user {user} failed: {exc}")

    def author_posts(self) -> None:
        """One new post by a random user, on a topic drawn from its author topic mixture, known to the truth."""
        gt = self.truth.gt
        rng = np.random.default_rng([self.args.seed, self.sessions_run, 2])
        author = int(rng.integers(len(gt["user_ids"])))
        mixture = gt["author_topics"][author].astype(np.float64)
        topic = int(rng.choice(len(mixture), p=mixture / mixture.sum()))
        post_id, now_ms = self.next_post_id, clock.now_ms()
        self.next_post_id += 1
        self.posts_created += 1
        body = {"post_id": post_id, "author_id": int(gt["user_ids"][author]), "created_at_ms": now_ms,
                "text": f"simulated post on topic{topic}"}
        try:
            self.http.post("/v1/posts", json=body).raise_for_status()
        except httpx.HTTPError as exc:
            self.errors += 1
            progress(f"post by user {body['author_id']} failed: {exc}")
            return
        self.truth.add_posts(np.array([post_id]), np.array([body["author_id"]]), np.array([topic]),
                             np.array([now_ms]))


# --------------------------------------------------------------------------- report


def print_figures(prefix: str, tally: SessionTally) -> dict[str, float]:
    values = {}
    for name, (value, unit) in tally.figures().items():
        print(f"{prefix}.{name} {value:.6g} {unit}", flush=True)
        values[name] = value
    return values


# figures compared as paired ratios: (name, the per-session sum it divides, or None for a per-session figure)
RATIOS = (("engagement_rate", "engaged"), ("unregretted_s_per_session", None),
          ("expected_unregretted_s_per_session", None), ("expected_negative_rate", "expected_negatives"))
_PER_SESSION = {"unregretted_s_per_session": "unregretted_s",
                "expected_unregretted_s_per_session": "expected_unregretted_s"}


def paired_ratio(a: SessionTally, b: SessionTally, name: str, numerator: str | None) -> tuple[float, float]:
    """(figure ``name`` of ``a`` / of ``b``, its standard error), the two tallies' sessions paired (the same
    readers, sessions and random numbers, in the same order): the delta method over the sessions' differences
    of linearised figures, so what the readers share (a heavy reader, a lucky draw) cancels."""
    if a.sessions != b.sessions or a.sessions < 2:
        return float("nan"), float("nan")

    def linearised(t: SessionTally) -> tuple[float, np.ndarray]:  # (figure, each session's share of its error / figure)
        if numerator is None:
            y = t.per_session(_PER_SESSION[name])
            return float(y.mean()), y / y.mean() - 1.0 if y.mean() else np.full(len(y), np.nan)
        y, v = t.per_session(numerator), t.per_session("viewed")
        rate = y.sum() / v.sum() if v.sum() else 0.0
        return float(rate), (y - rate * v) / (rate * v.mean()) if rate else np.full(len(y), np.nan)

    fa, la = linearised(a)
    fb, lb = linearised(b)
    if not fb:
        return float("nan"), float("nan")
    ratio = fa / fb
    return ratio, float(abs(ratio) * np.std(la - lb, ddof=1) / np.sqrt(len(la)))


def print_ratio(prefix: str, a: SessionTally, b: SessionTally) -> dict[str, float]:
    values = {}
    for name, numerator in RATIOS:
        ratio, se = paired_ratio(a, b, name, numerator)
        print(f"{prefix}.{name} {ratio:.6g} ratio", flush=True)
        print(f"{prefix}.{name}_se {se:.6g} ratio", flush=True)
        values[name] = ratio
    return values


def report(tallies: dict[str, SessionTally], retrained: bool) -> dict[str, dict[str, float]]:
    out = {}
    for policy, tally in tallies.items():
        prefix = ("sim.retrained" if policy == "ranker" else f"sim.retrained.{policy}") if retrained else f"sim.{policy}"
        out[policy] = print_figures(prefix, tally)
    if "ranker" in tallies:
        for other in tallies:
            if other != "ranker":
                print_ratio(f"sim.{'retrained.' if retrained else ''}ranker_over_{other}", tallies["ranker"], tallies[other])
    return out


# --------------------------------------------------------------------------- the app this script starts


ALL_CANDIDATES = 5_000  # more than a feed request gathers (sources: 1,200 + 1,600 + the popular ones)


def app_env(candidates: int) -> dict[str, str]:
    """The app's environment: up to ``candidates`` filtered candidates come back to the client (one list every
    policy orders)."""
    # RAY_ADDRESS=local: the backfill's Ray Data job starts a Ray of its own (a plain `ray.init()` joins a Ray
    # another job started on this machine)
    return {**os.environ, "XSERVE__MIXER__TOP_K": str(candidates), "XSERVE__SERVING__MAX_FEED_LIMIT": str(candidates),
            "PYTHONPATH": str(ROOT), "RAY_ADDRESS": "local"}


def run_checked(env: dict[str, str], *argv: str | Path) -> None:
    """``python ARGV`` in the checkout; raises with the tail of its output if it fails."""
    command = [sys.executable, *map(str, argv)]
    progress(" ".join(command[1:]))
    started = time.perf_counter()
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command[1:3])} exited {done.returncode}: {(done.stdout + done.stderr)[-800:]}")
    progress(f"  took {time.perf_counter() - started:.0f} s")


def xserve(env: dict[str, str], *argv: str) -> None:
    """``python -m xserve ARGV``."""
    run_checked(env, "-m", "xserve", *argv)


def traffic_bytes(data_dir: Path) -> int:
    """Bytes of the data directory that serving writes (logs, tables), leaving out the model and embedding
    versions a retrain and a re-embedding write."""
    layout = DataDirLayout(data_dir)
    versions = (layout.models.resolve(), layout.embeddings.resolve())
    return sum(f.stat().st_size for f in Path(data_dir).rglob("*")
               if f.is_file() and not any(v in f.resolve().parents for v in versions))


def print_disk_growth(name: str, grown_bytes: int, traffic_s: float) -> None:
    """``sim.<name>``: megabytes a simulated hour of this traffic adds to the data directory."""
    print(f"sim.{name} {grown_bytes / 1e6 / max(traffic_s, 1e-9) * 3600:.1f} MB/h", flush=True)


def simulate(args, url: str, data_dir: Path, retrain: Callable[[httpx.Client, int], None] | None,
             disk: dict[str, float] | None = None) -> int:
    """``disk`` (optional) receives the traffic's ``start_bytes`` and ``traffic_s`` (the passes' time, not the
    retrain's), so the caller can measure the directory again after compaction."""
    truth = TrueActionModel(np.load(data_dir / "ground_truth.npz"))
    behaviour = BehaviourModel(truth, BehaviourConfig(attention_decay=args.attention_decay, regret_s=args.regret_s))
    users = np.sort(np.random.default_rng(args.seed).choice(truth.gt["user_ids"], size=min(args.users, truth.num_users),
                                                            replace=False))
    headers = {"Authorization": f"Bearer {args.api_key}"} if args.api_key else {}
    progress(f"{len(users)} users x {args.sessions} session(s) x {len(args.policies)} policies at {url}; {behaviour!r}")
    with httpx.Client(base_url=url, timeout=args.timeout, headers=headers) as http:
        sim = Simulator(http, truth, behaviour, args, users)
        start_bytes, passes_started = traffic_bytes(data_dir), time.perf_counter()
        before = sim.run(args.policies, "before")
        traffic_s = time.perf_counter() - passes_started
        report(before, retrained=False)
        if retrain is not None:
            retrain(http, int(users[0]))
            second_started = time.perf_counter()
            after = sim.run(args.policies, "retrained")
            traffic_s += time.perf_counter() - second_started
            report(after, retrained=True)
            if "ranker" in before and "ranker" in after:
                print_ratio("sim.retrain_gain", after["ranker"], before["ranker"])
                for name in ("dwell_s_per_session",):
                    base = before["ranker"].figures()[name][0]
                    gain = after["ranker"].figures()[name][0] / base if base else float("nan")
                    print(f"sim.retrain_gain.{name} {gain:.6g} ratio", flush=True)
        grown = traffic_bytes(data_dir) - start_bytes
        print(f"sim.disk_traffic_bytes {grown} bytes", flush=True)
        print_disk_growth("disk_growth_per_hour", grown, traffic_s)
        if disk is not None:
            disk.update(start_bytes=start_bytes, traffic_s=traffic_s)
        print(f"sim.request_errors {sim.errors} requests", flush=True)
        print(f"sim.feed_requests {sim.feeds} requests", flush=True)
        print(f"sim.posts_created {sim.posts_created} posts", flush=True)
    return 0


def wait_for_versions(http: httpx.Client, user: int, ranker_version: str, embedding_version: str,
                      timeout_s: float = 300.0) -> float:
    """Seconds until a feed is scored by ``ranker_version`` (the version's ranker checkpoint, as feeds name it)
    and ``/v1/admin/stats`` names ``embedding_version`` as retrieval's."""
    started = time.perf_counter()
    while True:
        posts = http.post("/v1/feed/for_you", json={"viewer_id": user, "limit": 5}).json().get("posts", [])
        retrieval = http.get("/v1/admin/stats").json().get("retrieval", {}).get("version")
        ranked_by = {p.get("model_version") for p in posts} - {"", None}  # unranked posts name none
        if ranked_by == {ranker_version} and retrieval == embedding_version:
            return time.perf_counter() - started
        if time.perf_counter() - started > timeout_s:
            raise RuntimeError(f"the app did not pick up the retrained models in {timeout_s:.0f} s: feeds scored by "
                               f"{sorted(ranked_by)} (want {ranker_version}), retrieval on {retrieval} "
                               f"(want {embedding_version})")
        time.sleep(1.0)


def run_own_app(args) -> int:
    """Seed a fresh world in a temporary directory, train, serve it, simulate, retrain, simulate again, stop."""
    # a SIGTERM (a `timeout`) unwinds like Ctrl-C, so the app started below is stopped and the directory removed
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(143))
    with tempfile.TemporaryDirectory(prefix="xserve-sim-") as tmp:
        data_dir = Path(tmp) / "data"
        env = app_env(args.candidates)
        started = time.perf_counter()
        if args.data_dir is not None:  # a seeded, trained world of the user's: a copy, so the run leaves it as it was
            progress(f"copying {args.data_dir}")
            shutil.copytree(args.data_dir, data_dir)
        else:
            xserve(env, "seed", "--size", args.size, "--seed", str(args.seed), "--data-dir", str(data_dir), "--quiet")
            xserve(env, "train", "--data-dir", str(data_dir), "--quiet")
        app = AppProcess(data_dir, args.port, args.num_cpus, env, Path(tmp) / "app.log", start_timeout_s=1800)
        progress(f"world ready in {time.perf_counter() - started:.0f} s; starting the app")
        app.start()
        try:
            def retrain(http: httpx.Client, reader: int) -> None:
                """Retrain on the logged traffic and hot-swap it in, the app serving throughout: a new model
                version (``models/CURRENT``: the Ranker replicas follow it), then the corpus re-embedded with its
                towers (``embeddings/CURRENT``: retrieval follows with the paired user tower)."""
                env_train = {**env, "XSERVE__LOOP__NEGATIVES": args.retrain_negatives}
                xserve(env_train, "train", "--data-dir", str(data_dir), "--quiet", "--name", RETRAINED)
                towers = DataDirLayout(data_dir).model_version(RETRAINED) / DataDirLayout(data_dir).towers_checkpoint.name
                run_checked(env, ROOT / "scripts" / "backfill_embeddings.py", "--data-dir", str(data_dir),
                            "--towers-checkpoint", str(towers), "--version", RETRAINED, "--quiet")
                manifest = ModelVersions(data_dir).manifest(RETRAINED)
                data = manifest.get("data", {})  # what the retrain read: the table's rows and the live ones
                print(f"sim.retrain_data.table_engagements {data.get('table', 0)} engagements", flush=True)
                print(f"sim.retrain_data.live_engagements {data.get('live_new', 0)} engagements", flush=True)
                print(f"sim.retrain_data.table_posts {data.get('posts_table', 0)} posts", flush=True)
                print(f"sim.retrain_data.live_posts {data.get('posts_live', 0)} posts", flush=True)  # via POST /v1/posts
                if "impressions" in data:
                    print(f"sim.retrain_data.impressions {data['impressions']} impressions", flush=True)
                    for key, unit in (("feeds", "feeds"), ("reported_feeds", "feeds"),
                                      ("served_impressions", "impressions"), ("seen_impressions", "impressions")):
                        if f"impression_{key}" in data:
                            print(f"sim.retrain_data.{key} {data[f'impression_{key}']} {unit}", flush=True)
                ranker_version = manifest["ranker_version"]
                waited = wait_for_versions(http, reader, ranker_version, RETRAINED)
                progress(f"version {RETRAINED} live (ranker and retrieval) {waited:.0f} s after the switch; no restart")

            disk: dict[str, float] = {}
            code = simulate(args, f"http://127.0.0.1:{args.port}", data_dir, None if args.no_retrain else retrain, disk)
        finally:
            app.stop()
        # what the traffic's hour weighs once compacted (retention and folding need the app stopped)
        xserve(env, "compact", "--data-dir", str(data_dir))
        print_disk_growth("disk_growth_per_hour_after_compact", traffic_bytes(data_dir) - int(disk["start_bytes"]),
                          disk["traffic_s"])
        progress(f"done in {time.perf_counter() - started:.0f} s")
        return code


def _policies(text: str) -> tuple[str, ...]:
    names = tuple(x.strip() for x in text.split(",") if x.strip())
    unknown = [n for n in names if n not in POLICIES]
    if not names or unknown:
        raise argparse.ArgumentTypeError(f"--policies takes some of {','.join(POLICIES)}; got {text!r}")
    return names


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], epilog="See the module docstring for the method.")
    p.add_argument("--size", choices=("tiny", "small", "medium", "large"), default="small",
                   help="the world seeded when no --url is given (default small)")
    p.add_argument("--url", default=None, help="drive this running server (loopback only) instead; needs --data-dir")
    p.add_argument("--data-dir", type=Path, default=None,
                   help="with --url: the server's data directory (its ground_truth.npz); without: a seeded world with "
                   "trained models to start the app on (copied; instead of seeding --size and training)")
    p.add_argument("--api-key", default="", help="with --url: the server's serving.api_key, for writes")
    p.add_argument("--users", type=int, default=60,
                   help="readers drawn from the world (default 60: sized to the 20-minute run, docs/simulation.md)")
    p.add_argument("--sessions", type=int, default=1, help="sessions per reader and policy (default 1)")
    p.add_argument("--pages", type=int, default=3, help="pages a session reads at most (default 3)")
    p.add_argument("--page-size", type=int, default=10, help="posts per page (default 10)")
    p.add_argument("--candidates", type=int, default=None,
                   help=f"posts asked per feed request: the list every policy orders (default {ALL_CANDIDATES}: every "
                        "candidate of the app this script starts; with --url 200, a server's default most)")
    p.add_argument("--policies", type=_policies, default=POLICIES, help=f"comma-separated (default {','.join(POLICIES)})")
    p.add_argument("--attention-decay", type=float, default=BehaviourConfig().attention_decay,
                   help="P(reading on after a post) (default %(default)s)")
    p.add_argument("--regret-s", type=float, default=BehaviourConfig().regret_s,
                   help="seconds each negative action subtracts from the unregretted seconds (default %(default)s)")
    p.add_argument("--post-every", type=int, default=4, help="an author posts every N sessions (0 = never; default 4)")
    p.add_argument("--no-retrain", action="store_true", help="skip the retrain and the second pass")
    p.add_argument("--retrain-negatives", choices=("sampled", "impressions"), default="sampled",
                   help="the retrain's loop.negatives (default %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="world, readers and draws (default 0)")
    p.add_argument("--port", type=int, default=8790, help="the started app's port (default 8790)")
    p.add_argument("--num-cpus", type=int, default=2, help="the started app's Ray CPUs (default 2)")
    p.add_argument("--timeout", type=float, default=30.0, help="per-request timeout, seconds (default 30)")
    args = p.parse_args(argv)
    if args.candidates is None:
        args.candidates = 200 if args.url is not None else ALL_CANDIDATES
    if min(args.users, args.sessions, args.pages, args.page_size) < 1 or not 1 <= args.candidates <= ALL_CANDIDATES:
        p.error(f"--users, --sessions, --pages and --page-size must be >= 1, --candidates in [1, {ALL_CANDIDATES}]")
    if args.url is not None:
        if not _loopback(args.url):
            p.error(f"--url must be a loopback address, got {args.url}")
        if args.data_dir is None or not (args.data_dir / "ground_truth.npz").exists():
            p.error("--url needs --data-dir: the server's data directory, holding the world's ground_truth.npz")
        return simulate(args, args.url, args.data_dir, None)
    if args.data_dir is not None:
        if not ((args.data_dir / "ground_truth.npz").exists() and ModelVersions(args.data_dir).live_paths()[0].is_file()):
            p.error(f"--data-dir {args.data_dir} needs a seeded world (ground_truth.npz) with trained models: run "
                    "`xserve seed` and `xserve train` on it first, or leave --data-dir out")
        try:  # before the app starts: a world seeded before the oracle's keys cannot be simulated
            TrueActionModel(np.load(args.data_dir / "ground_truth.npz"))
        except ValueError as exc:
            p.error(f"--data-dir {args.data_dir}: {exc}")
    try:
        return run_own_app(args)
    except RuntimeError as exc:
        print(f"simulate: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
