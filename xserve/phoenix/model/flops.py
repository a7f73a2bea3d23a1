"""The ranker's arithmetic: useful FLOPs of one request, and the matmul peak they are compared against.

One definition shared by ``benchmarks/bench_ranker.py`` (achieved GFLOP/s of a
cache miss) and ``scripts/load_test.py`` (the feed's latency over the ranker's
FLOP bound, ``load.feed_p50_vs_flop_bound``). Machines of one kind differ by up
to 2x in speed, so a figure is a ratio against the peak measured in the same
run, never against a number from another machine.
"""

from __future__ import annotations

import statistics
import time

import torch

from xserve.config import PhoenixConfig
from xserve.phoenix.model.ranker import ffn_hidden_size
from xserve.schema import ACTIONS

__all__ = ["flop_bound_s", "matmul_gflops", "matmul_peak_gflops", "model_flops"]


def model_flops(cfg: PhoenixConfig, s: int, c: int) -> float:
    """Useful FLOPs of a cache miss: encode 1+S context tokens causally, then C candidates over 1+S keys + self.

    ``s`` is the history length given to the ranker (at most ``cfg.history_len``), ``c`` the candidates.
    Counts the projections, the gated FFN, attention (q·k and p·v), the item-embedding projection and
    the action heads; a multiply-add is 2 FLOPs.
    """
    d, h, g, k = cfg.emb_dim, cfg.num_q_heads, cfg.num_kv_heads, cfg.key_size
    f = ffn_hidden_size(cfg)
    per_token = 2 * d * (h * k + 2 * g * k) + 2 * h * k * d + 2 * d * f * 2 + 2 * f * d  # projections + FFN
    attn_per_key = 4 * h * k  # q·k and p·v
    t = 1 + s
    item = (cfg.num_post_hashes + cfg.num_author_hashes + 2) * d
    context = cfg.num_layers * (t * per_token + attn_per_key * t * (t + 1) / 2) + 2 * t * item * d
    cands = cfg.num_layers * c * (per_token + attn_per_key * (t + 1)) + 2 * c * item * d + 2 * c * d * (len(ACTIONS) + 1)
    return context + cands


def matmul_gflops(library: str = "torch", repeats: int = 20, n: int = 1024, threads: int | None = None) -> float:
    """A plain fp32 ``n x n`` matmul's GFLOP/s (median of ``repeats``), with ``threads`` torch threads (None: as
    set; the ranker's ``ranker_serving.num_threads`` is the fair setting for a served request), through
    ``library``: ``"torch"`` (its ``@``: MKL, whose AVX2 kernels it runs on AMD CPUs) or ``"onednn"`` (oneDNN's
    fp32 matmul through ``fused_scoring.linear``, the call the fused ranker kernels make on a CPU: on the 2-core
    box its AVX-512 kernels were ~2.2x faster). Raises where the kernels cannot use oneDNN.
    """
    # the serving kernels' own matmul and test, so the peak measures exactly what they call
    from xserve.phoenix.serving.fused_scoring import linear, onednn_linear_available

    before = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        a, b = torch.randn(n, n), torch.randn(n, n)
        if library == "onednn":
            if not onednn_linear_available(a.device, a.dtype):
                raise RuntimeError("this torch has no oneDNN fp32 matmul (fused_scoring.onednn_linear_available)")

            def product() -> torch.Tensor:
                return linear(a, b, onednn=True)  # a @ bᵀ: the same FLOPs as a @ b
        elif library == "torch":
            def product() -> torch.Tensor:
                return a @ b
        else:
            raise ValueError(f"library must be 'torch' or 'onednn', got {library!r}")
        product()  # warm-up: the first call allocates
        times = []
        for _ in range(max(1, repeats)):
            started = time.perf_counter()
            product()
            times.append(time.perf_counter() - started)
        return 2 * n**3 / statistics.median(times) / 1e9
    finally:
        torch.set_num_threads(before)


def matmul_peak_gflops(repeats: int = 20, n: int = 1024, threads: int | None = None) -> float:
    """The matmul peak: the fastest fp32 matmul this process can run, torch's ``@`` or oneDNN's where torch has
    it. The fused kernels call oneDNN, so a peak measured on the slower library alone would let them pass it."""
    from xserve.phoenix.serving.fused_scoring import onednn_linear_available

    peaks = [matmul_gflops("torch", repeats, n, threads)]
    if onednn_linear_available(torch.device("cpu"), torch.float32):  # else the kernels use torch's matmul too
        peaks.append(matmul_gflops("onednn", repeats, n, threads))
    return max(peaks)


def flop_bound_s(cfg: PhoenixConfig, s: int, c: int, peak_gflops: float) -> float:
    """The shortest time a request could take at the matmul peak: its ranker FLOPs / the peak."""
    return model_flops(cfg, s, c) / (peak_gflops * 1e9)
