"""Serving the ranker: the paged user-context KV cache, the batched ``RankerRunner``, fused scoring kernels, the vLLM backend."""
