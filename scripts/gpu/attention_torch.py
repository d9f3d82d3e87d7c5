"""PyTorch's scaled_dot_product_attention on the DiT's attention shape, per backend (cuDNN, flash,
memory-efficient), in bfloat16: the reference for scripts/gpu/attention.ts on the same card.

    python3 scripts/gpu/attention_torch.py [--tokens 19544] [--heads 24] [--head-dim 128] [--runs 10] [--out f.json]

Times with CUDA events, median of --runs after two warm-ups; TFLOP/s counts 4 * S^2 * heads * dim.
"""
import argparse
import json

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

p = argparse.ArgumentParser()
p.add_argument("--tokens", type=int, default=19544)
p.add_argument("--heads", type=int, default=24)
p.add_argument("--head-dim", type=int, default=128)
p.add_argument("--runs", type=int, default=10)
p.add_argument("--out")
a = p.parse_args()

S, H, D = a.tokens, a.heads, a.head_dim
q, k, v = (torch.randn(1, H, S, D, device="cuda", dtype=torch.bfloat16) for _ in range(3))
flop = 4 * S * S * H * D
results = []
for name, backend in [("cudnn", SDPBackend.CUDNN_ATTENTION), ("flash", SDPBackend.FLASH_ATTENTION),
                      ("efficient", SDPBackend.EFFICIENT_ATTENTION)]:
    r = {"backend": name, "tokens": S, "heads": H, "headDim": D, "torch": torch.__version__}
    try:
        with sdpa_kernel(backend):
            for _ in range(2):
                F.scaled_dot_product_attention(q, k, v)
            times = []
            for _ in range(a.runs):
                s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                s.record()
                F.scaled_dot_product_attention(q, k, v)
                e.record()
                torch.cuda.synchronize()
                times.append(s.elapsed_time(e))
        ms = sorted(times)[len(times) // 2]
        r.update(attentionMs=round(ms, 3), tflops=round(flop / (ms / 1000) / 1e12, 1))
    except Exception as err:  # a backend this build or card lacks
        r["error"] = str(err).split("\n")[0][:300]
    print(json.dumps(r), flush=True)
    results.append(r)
if a.out:
    with open(a.out, "w") as f:
        json.dump(results, f, indent=1)
