#!/usr/bin/env python
"""Continuous training: train on the newest window, evaluate against the live model, promote, re-embed, switch.

    python scripts/continuous_train.py --data-dir ./xserve-data              # one cycle, now
    python scripts/continuous_train.py --data-dir ./xserve-data --every-s 3600 --cycles 24

One cycle, each step printed with its progress and time:

1. **data**: the engagements table (seeded or imported) plus the live engagements the API accepted, cut to
   the newest ``loop.train_window_ms``; with ``loop.negatives = "impressions"`` the impression log too;
2. **train**: a new model version beside the live one (``models/v<name>/``), not switched;
3. **evaluate**: the candidate and the live version on the same held-out recent traffic (the candidate's
   time split: the newest ``train.validation_fraction`` of the window), ``xserve evaluate``'s metrics;
4. **guardrail**: promote only when no primary metric (``xserve.loop.cycle.PRIMARY_METRICS``) is worse than
   the live version's by more than ``loop.guardrail_tolerance``; otherwise stop here (the version stays on
   disk for inspection, ``xserve models show NAME``);
5. **re-embed**: ``scripts/backfill_embeddings.py``'s Ray Data job embeds the posts with the candidate's
   towers into the embedding version of the same name, not switched;
6. **switch**: ``embeddings/CURRENT`` then ``models/CURRENT``: the Retrieval replicas take the new tower with
   its corpus, the Ranker replicas the new ranker, each without a restart.

Writes ``DIR/loop/reports/<name>.json`` per cycle (steps, seconds, metrics of both models, the verdict) and
prints its path; exit status 0 when every cycle ran (promoted or not), 1 when one failed.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout without installing

from xserve import clock  # noqa: E402
from xserve.config import XServeConfig, load_config, merge_config  # noqa: E402
from xserve.storage.files import write_json_atomic  # noqa: E402
from xserve.storage.layout import DataDirLayout  # noqa: E402
from xserve.storage.model_versions import ModelVersions  # noqa: E402

__all__ = ["run_cycle", "main"]

STEPS = ("data", "train", "evaluate", "guardrail", "re-embed", "switch")


def _evaluate_both(config: XServeConfig, candidate: str, live_paths: tuple[Path, Path], since_ms: int | None) -> dict:
    """Primary metrics of the candidate and of the live models on the candidate's held-out split."""
    import msgspec
    import pyarrow as pa

    from xserve.cli import _engagement_tables
    from xserve.loop.cycle import primary_metrics
    from xserve.phoenix.training.evaluate import evaluate
    from xserve.phoenix.training.train import deterministic, load_ranker, load_towers, machine_num_threads, prepare

    versions = ModelVersions(config.storage.data_dir)
    engagements, posts, users, _ = _engagement_tables(config.storage.data_dir, live=True)
    if since_ms is not None:
        engagements = engagements.filter(pa.array(engagements.column("timestamp_ms").to_numpy() >= since_ms))
    split_ms = int(versions.manifest(candidate)["split_ms"])
    out: dict[str, Any] = {"split_ms": split_ms}
    for side, (ranker_path, towers_path) in (("candidate", (versions.ranker_path(candidate), versions.towers_path(candidate))),
                                              ("live", live_paths)):
        ranker, towers = load_ranker(ranker_path), load_towers(towers_path)
        cfg = msgspec.structs.replace(config, phoenix=ranker.config)
        data = prepare(engagements, posts, cfg, ranker.featurizer, split_ms=split_ms, users=users)  # same held-out rows
        with deterministic(config.train.seed, machine_num_threads(config.train.num_threads)):
            out[side] = primary_metrics(evaluate(data, ranker.model, towers.model, seed=config.train.seed))
        out[f"{side}_ranker_version"] = ranker.version
    return out


def run_cycle(config: XServeConfig, say, progress: bool = True, force: bool = False) -> dict[str, Any]:
    """One cycle (module docstring); returns the report it wrote."""
    from xserve.cli import _engagement_tables, train_version
    from xserve.loop.cycle import guardrail

    data_dir = config.storage.data_dir
    layout, versions = DataDirLayout(data_dir), ModelVersions(data_dir)
    report: dict[str, Any] = {"started_at_ms": clock.now_ms(), "steps": {}, "live_version": versions.current_name()}
    live_paths = versions.live_paths()
    t_cycle = time.perf_counter()

    def step(i: int, name: str, detail: str) -> float:
        say(f"[{i}/{len(STEPS)}] {name}: {detail}")
        return time.perf_counter()

    t = step(1, "data", f"engagements of the newest {config.loop.train_window_ms / 86_400_000:g} days")
    engagements, _, _, counts = _engagement_tables(data_dir, live=True)
    last_ms = int(engagements.column("timestamp_ms").to_numpy().max())
    since_ms = last_ms - config.loop.train_window_ms
    report["steps"]["data"] = {**counts, "since_ms": since_ms, "last_ms": last_ms, "s": round(time.perf_counter() - t, 2)}
    del engagements

    t = step(2, "train", "a new model version beside the live one (not switched)")
    manifest = train_version(config, switch=False, progress=progress, since_ms=since_ms, say=say)
    name = report["version"] = manifest["version"]
    report["steps"]["train"] = {"version": name, "ranker_version": manifest["ranker_version"],
                                "towers_version": manifest["towers_version"], "s": round(time.perf_counter() - t, 2)}

    t = step(3, "evaluate", f"{name} and the live models on the same held-out recent traffic")
    if not live_paths[0].is_file():
        scores = {"candidate": {}, "live": {}, "note": "no live model: promoted without comparison"}
    else:
        scores = _evaluate_both(config, name, live_paths, since_ms)
    report["steps"]["evaluate"] = {**scores, "s": round(time.perf_counter() - t, 2)}
    for metric, value in scores["candidate"].items():
        live = scores["live"].get(metric)
        say(f"    {metric:<26} candidate {value if value is None else f'{value:.4f}'}  "
            f"live {live if live is None else f'{live:.4f}'}")

    t = step(4, "guardrail", f"no primary metric worse by more than {config.loop.guardrail_tolerance:g}")
    verdict = guardrail(scores["candidate"], scores["live"], config.loop.guardrail_tolerance) \
        if scores["live"] else {"promote": True, "worse": {}, "skipped": []}
    promote = verdict["promote"] or force
    report["steps"]["guardrail"] = {**verdict, "forced": force and not verdict["promote"], "promote": promote}
    say(f"    {'promote' if promote else 'keep the live version'}"
        + (f" (worse: {', '.join(verdict['worse'])})" if verdict["worse"] else ""))
    if promote:
        t = step(5, "re-embed", f"the posts with {name}'s candidate tower (Ray Data), embedding version {name}")
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        from backfill_embeddings import run_backfill

        towers = str(versions.towers_path(name))
        summary = run_backfill(data_dir, merge_config(config, {"retrieval": {"towers_checkpoint": towers}}),
                               version=name, switch=False, quiet=not progress)
        report["steps"]["re-embed"] = {"rows": summary.get("rows"), "s": round(time.perf_counter() - t, 2)}

        t = step(6, "switch", f"embeddings/CURRENT and models/CURRENT -> {name}")
        from xserve.storage.lance.embeddings import EmbeddingVersions

        embeddings = EmbeddingVersions(data_dir)
        embeddings.switch(name)  # the Retrieval replicas take the new tower with its corpus
        versions.record_embeddings(name, name)
        versions.switch(name, clock.now_ms())  # the Ranker replicas take the new ranker
        pruned = {"models": versions.prune(config.loop.keep_model_versions),
                  "embeddings": embeddings.prune(config.retrieval.keep_versions)}
        report["steps"]["switch"] = {"pruned": pruned, "s": round(time.perf_counter() - t, 2)}
    report["promoted"] = promote
    report["seconds"] = round(time.perf_counter() - t_cycle, 1)
    layout.loop_reports.mkdir(parents=True, exist_ok=True)
    path = layout.loop_reports / f"{name}.json"
    write_json_atomic(path, report)
    say(f"cycle {name}: {'promoted' if promote else 'not promoted'} in {report['seconds']:.0f} s; report {path}")
    return report


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="continuous_train", description=__doc__.splitlines()[0])
    p.add_argument("--data-dir", required=True, help="the data directory the app serves")
    p.add_argument("--config", help="xserve config file (.toml/.yaml)")
    p.add_argument("--every-s", type=float, default=0.0, help="seconds between cycle starts (default 0: one cycle)")
    p.add_argument("--cycles", type=int, default=1, help="cycles to run with --every-s (default 1)")
    p.add_argument("--force", action="store_true", help="promote even when the guardrail says no")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    args = p.parse_args(argv)
    if args.cycles < 1 or args.every_s < 0:
        p.error("--cycles must be >= 1 and --every-s >= 0")
    from xserve.cli import CliError

    say = lambda m: print(f"continuous_train: {m}", file=sys.stderr, flush=True)  # noqa: E731
    config = load_config(args.config, overrides={"storage": {"data_dir": args.data_dir}})
    failed = 0
    for i in range(args.cycles):
        started = time.monotonic()
        try:
            report = run_cycle(config, say, progress=not args.quiet, force=args.force)
            print(json.dumps({"version": report["version"], "promoted": report["promoted"], "seconds": report["seconds"]}))
        except CliError as exc:
            print(f"continuous_train: error: {exc}", file=sys.stderr)
            failed += 1
        if i + 1 < args.cycles:
            time.sleep(max(0.0, args.every_s - (time.monotonic() - started)))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
