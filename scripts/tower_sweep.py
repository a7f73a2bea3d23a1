"""Retrieval towers, measured: train only the towers under config overrides and report recall@k.

    python scripts/tower_sweep.py --data-dir DIR [--baselines] \
        --try base= --try mixed=tower_uniform_negatives=1024 --try cold=tower_post_init_std=0,tower_uniform_negatives=1024

Each ``--try NAME=key=value,key=value`` trains the towers from scratch with those ``[train]`` fields
changed (same seed, same split, same data) and evaluates them exactly as ``xserve evaluate`` does
(``evaluate._retrieval_metrics``: brute force over the corpus window of each query). ``--baselines``
adds popularity, item-kNN and random (and the oracle on a synthetic world) once. Prints one
``name value unit`` line per figure; the machine is shared, so compare within one run.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import msgspec
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from xserve.config import TrainConfig, load_config  # noqa: E402
from xserve.phoenix.training import evaluate as ev  # noqa: E402
from xserve.phoenix.training.train import deterministic, machine_num_threads, prepare, train_towers  # noqa: E402


def _overrides(text: str) -> tuple[str, dict]:
    name, _, rest = text.partition("=")
    fields = TrainConfig.__struct_fields__
    out: dict = {}
    for item in filter(None, rest.split(",")):
        key, _, value = item.partition("=")
        if key not in fields:
            raise SystemExit(f"tower_sweep: unknown train field {key!r}")
        out[key] = msgspec.json.decode(value.encode()) if value not in ("true", "false") else value == "true"
    return name, out


class _NoBaseline:
    """Scores nothing (zeros): the sweep skips the baselines' cost unless asked."""

    def grid(self, *args, **kwargs):
        q, w = len(args[-1]), len(args[-2])
        return np.zeros((q, w), np.float32)

    def user_vectors(self, *args, **kwargs):
        return None


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-dir", required=True)
    p.add_argument("--config", default=None)
    p.add_argument("--try", dest="tries", action="append", default=[], metavar="NAME=k=v,...")
    p.add_argument("--baselines", action="store_true")
    args = p.parse_args(argv)
    from xserve.cli import _engagement_tables, _oracle

    base = load_config(args.config, overrides={"storage": {"data_dir": args.data_dir}})
    engagements, posts, users = _engagement_tables(args.data_dir)
    data = prepare(engagements, posts, base, users=users)
    if args.baselines:
        t0 = time.perf_counter()
        out = ev._retrieval_metrics(data, _ZeroTowers(), ev.PriorCounts(data.entries), ev.ItemKNN(data.entries),
                                    _oracle(args.data_dir), np.random.default_rng(base.train.seed), print)
        for method, block in out.items():
            if method != "model":
                for k, v in block.items():
                    print(f"{method}.{k} {v:.4f} recall")
        print(f"baselines.seconds {time.perf_counter() - t0:.0f} s")
    for text in args.tries or ["default="]:
        name, fields = _overrides(text)
        config = msgspec.structs.replace(base, train=msgspec.structs.replace(base.train, **fields))
        data.config = msgspec.structs.replace(data.config, train=config.train)
        t0 = time.perf_counter()
        with deterministic(config.train.seed, machine_num_threads(config.train.num_threads)) as rng:
            towers, metrics = train_towers(data, rng)
            t1 = time.perf_counter()
            out = ev._retrieval_metrics(data, towers, _NoBaseline(), _NoBaseline(), None,
                                        np.random.default_rng(config.train.seed))
        for k, v in out["model"].items():
            print(f"{name}.{k} {v:.4f} recall")
        print(f"{name}.steps {metrics['steps']} steps")
        print(f"{name}.temperature {metrics['temperature']:.4f} tau")
        print(f"{name}.loss_last {metrics['train_loss_last']:.3f} nats")
        print(f"{name}.train_seconds {t1 - t0:.0f} s")
        sys.stdout.flush()
    return 0


class _ZeroTowers:
    """Embeds everything as zeros: the baselines' pass does not need a model."""

    def candidate_embeddings(self, post, author):
        import torch

        return torch.zeros(len(post), 1)

    def user_embeddings(self, ctx):
        import torch

        return torch.zeros(ctx.post_hashes.shape[0], 1)


if __name__ == "__main__":
    raise SystemExit(main())
