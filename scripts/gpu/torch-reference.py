"""What the same GPU does with PyTorch at the DiT's shapes: one block's GEMMs and the joint attention
(17,500 image + 769 text tokens, 24 heads x 128, bfloat16) with each SDPA backend. Projects 60 blocks.
Run on the GPU machine (its python3 has torch):  python3 scripts/gpu/torch-reference.py"""
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from cuda_timer import median_ms

N, D, H, F = 17500 + 769, 3072, 24, 12288
dev, dt = 'cuda', torch.bfloat16


def bench(fn):
    return median_ms(fn, reps=10)


x = torch.randn(N, D, device=dev, dtype=dt)
w = {k: torch.randn(o, i, device=dev, dtype=dt) / i ** 0.5 for k, (o, i) in
     {'qkv': (D, D), 'up': (F, D), 'down': (D, F), 'proj': (D, D + F)}.items()}
hmid = torch.randn(N, F, device=dev, dtype=dt)
cat = torch.randn(N, D + F, device=dev, dtype=dt)
# dual block: q,k,v,out per stream (4 D x D) + ff up/down; the image and text streams together cover N tokens
dual = bench(lambda: [x @ w['qkv'].T for _ in range(4)] + [x @ w['up'].T, hmid @ w['down'].T])
# single block: q,k,v (3 D x D) + proj_mlp (D -> F) + proj_out (D + F -> D)
single = bench(lambda: [x @ w['qkv'].T for _ in range(3)] + [x @ w['up'].T, cat @ w['proj'].T])
gemm_flop = 2 * N * D * D * 12
print(f'GEMMs per dual block {dual:.2f} ms, per single block {single:.2f} ms ({gemm_flop / (single / 1e3) / 1e12:.0f} TFLOP/s); '
      f'60 blocks {(20 * dual + 40 * single) / 1e3:.3f} s')
q, k, v = (torch.randn(1, H, N, 128, device=dev, dtype=dt) for _ in range(3))
att_flop = 4 * N * N * D
for name, be in [('flash', SDPBackend.FLASH_ATTENTION), ('cudnn', SDPBackend.CUDNN_ATTENTION), ('efficient', SDPBackend.EFFICIENT_ATTENTION)]:
    try:
        with sdpa_kernel(be):
            ms = bench(lambda: torch.nn.functional.scaled_dot_product_attention(q, k, v))
        print(f'SDPA {name}: {ms:.2f} ms per attention ({att_flop / (ms / 1e3) / 1e12:.0f} TFLOP/s), 60 blocks {60 * ms / 1e3:.3f} s')
    except Exception as e:  # a backend this build or GPU lacks
        print(f'SDPA {name}: unavailable ({str(e).splitlines()[0][:120]})')
# what the original's attention gets without a backend named: FramePack's attn_varlen_func (no flash-attn, xformers or
# sage installed) calls SDPA on (B, S, H, D) tensors transposed to (B, H, S, D), without .contiguous()
qs, ks, vs = (torch.randn(1, N, H, 128, device=dev, dtype=dt) for _ in range(3))
ms = bench(lambda: torch.nn.functional.scaled_dot_product_attention(qs.transpose(1, 2), ks.transpose(1, 2), vs.transpose(1, 2)))
print(f'SDPA as the original calls it (default dispatch): {ms:.2f} ms per attention, 60 blocks {60 * ms / 1e3:.3f} s; '
      f'torch {torch.__version__}, cuDNN {torch.backends.cudnn.version()}')
