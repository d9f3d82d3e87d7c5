"""
Device -> host copies on the GPU machine, in PyTorch (no bundle needed): float32 tensors of a VAE tile's output
(24 MB), an untiled window's (106 MB) and a whole section's frames (341 MB), copied into pageable memory that
exists, into pinned memory, and into new memory (`.cpu()`, as the original's decode does), and the host memcpy of
the same sizes. Medians of 10 after one warm-up.

    python3 scripts/gpu/host-copy.py
"""
import time

import torch


def median_ms(fn, n=10):
    fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    times.sort()
    return times[len(times) // 2] * 1e3


for mb in (24, 106, 341):
    n = mb * 2**20 // 4
    dev = torch.randn(n, device='cuda')
    pageable, pinned = torch.empty(n), torch.empty(n).pin_memory()
    a = median_ms(lambda: pageable.copy_(dev))
    b = median_ms(lambda: pinned.copy_(dev))
    c = median_ms(lambda: dev.cpu())
    print(f'{mb} MB float32 to the host: into pageable {a:.2f} ms ({mb / a:.1f} GB/s), pinned {b:.2f} ms '
          f'({mb / b:.1f} GB/s), into new memory (.cpu()) {c:.2f} ms')
    host, host_pinned = torch.randn(n), torch.randn(n).pin_memory()
    print(f'{mb} MB host memcpy: pageable -> pageable {median_ms(lambda: pageable.copy_(host)):.2f} ms, '
          f'pinned -> pageable {median_ms(lambda: pageable.copy_(host_pinned)):.2f} ms')
