"""What PyTorch does on the same GPU with the VAE decoder's full-resolution kernels (128 channels, 640x608,
float16): the reference for scripts/gpu/vae-kernels.ts. Also whether a conv over more than 2^31 elements
runs. Run on the GPU machine (its python3 has torch):  python3 scripts/gpu/vae-torch.py [frames]"""
import sys
import torch
import torch.nn.functional as F
from cuda_timer import median_ms

C, H, W, G = 128, 640, 608, 32
T = int(sys.argv[1]) if len(sys.argv) > 1 else 33
dev, dt = 'cuda', torch.float16


def bench(fn):
    return median_ms(fn, reps=3, warmup=1) / 1000


with torch.no_grad():
    x = (torch.rand(1, C, 1, H, W, device=dev, dtype=dt) * 4 - 2).expand(1, C, T, H, W).contiguous()
    w = (torch.rand(C, C, 3, 3, 3, device=dev, dtype=dt) - 0.5) * 0.04
    xp = F.pad(x, (1, 1, 1, 1, 2, 0), mode='replicate')
    print(f'frames {T}, elements {x.numel()} ({x.numel() / 2**31:.2f} x 2^31)')
    for name, fn in [
        ('pad', lambda: F.pad(x, (1, 1, 1, 1, 2, 0), mode='replicate')),
        ('silu', lambda: F.silu(x)),
        ('groupnorm', lambda: F.group_norm(x, G, eps=1e-6)),
        ('resize', lambda: F.interpolate(x, scale_factor=(2, 1, 1), mode='nearest')),
    ]:
        print(f'{name} {bench(fn):.4f} s')
    for bm in (False, True):
        torch.backends.cudnn.benchmark = bm
        y = F.conv3d(xp, w)
        d = (y[:, :, -1] - y[:, :, 0]).abs().max().item()
        print(f'conv cudnn.benchmark={bm} {bench(lambda: F.conv3d(xp, w)):.4f} s, first/last frame diff {d}')
    print(f'peak allocated {torch.cuda.max_memory_allocated() / 2**30:.1f} GiB')
