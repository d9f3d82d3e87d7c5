"""Median wall time of a CUDA workload in milliseconds, timed with CUDA events after warm-up calls: the one
timer of the PyTorch reference scripts (torch-reference.py, vae-torch.py)."""
import torch


def median_ms(fn, reps=10, warmup=3):
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    ts = []
    for _ in range(reps):
        a.record(); fn(); b.record(); torch.cuda.synchronize(); ts.append(a.elapsed_time(b))
    ts.sort()
    return ts[len(ts) // 2]
