"""PyTorch's time for the VAE decoder's causal 3x3x3 convolution and GroupNorm + SiLU at the shapes of
scripts/gpu/vae-conv-forms.ts (float16, median of 3 after a warm-up, CUDA events), as the original runs them
(cudnn.benchmark off, NCDHW tensors) and in the other layouts, for comparison with ONNX Runtime's forms.

    python3 scripts/gpu/vae-conv-torch.py [--shapes 128x640x608,256x320x304] [--frames 17] [--out file.json]
"""
import argparse, json
import torch
import torch.nn.functional as F

ap = argparse.ArgumentParser()
ap.add_argument("--shapes", default="128x640x608,256x320x304")
ap.add_argument("--frames", type=int, default=17)
ap.add_argument("--out")
args = ap.parse_args()


def timed(fn):
    fn()
    times = []
    for _ in range(3):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record(); fn(); b.record(); torch.cuda.synchronize()
        times.append(a.elapsed_time(b))
    return round(sorted(times)[1], 1)


results = []
for spec in args.shapes.split(","):
    C, H, W = map(int, spec.split("x"))
    T = args.frames
    x = (torch.rand(1, C, T, H, W, device="cuda", dtype=torch.float16) * 4 - 2)
    w = torch.randn(C, C, 3, 3, 3, device="cuda", dtype=torch.float16) / (27 * C) ** 0.5
    b = torch.randn(C, device="cuda", dtype=torch.float16) * 0.1
    gamma = torch.ones(C, device="cuda", dtype=torch.float16)

    def causal(v):  # diffusers' HunyuanVideoCausalConv3d: replicate pad (W, W, H, H, T-2, 0), Conv3d
        return F.conv3d(F.pad(v, (1, 1, 1, 1, 2, 0), mode="replicate"), w, b)

    xp = F.pad(x, (1, 1, 1, 1, 2, 0), mode="replicate")
    xcl = x.contiguous(memory_format=torch.channels_last_3d)
    wcl = w.contiguous(memory_format=torch.channels_last_3d)
    frames = x[0].transpose(0, 1).contiguous()  # (T, C, H, W)
    fp = F.pad(frames, (1, 1, 1, 1), mode="replicate")
    fp = torch.cat([fp[:1], fp[:1], fp], 0)
    stack = torch.cat([fp[k:k + T] for k in range(3)], 1)  # (T, 3C, H+2, W+2)
    w2 = torch.cat([w[:, :, k] for k in range(3)], 1).contiguous()  # (C, 3C, 3, 3)
    stack_cl, w2_cl = stack.contiguous(memory_format=torch.channels_last), w2.contiguous(memory_format=torch.channels_last)
    row = {"shape": spec, "frames": T}
    for bench in (False, True):
        torch.backends.cudnn.benchmark = bench
        tag = "" if not bench else "+benchmark"
        row["pad+conv3d" + tag] = timed(lambda: causal(x))
        row["conv3d" + tag] = timed(lambda: F.conv3d(xp, w, b))
        row["conv3d-cl" + tag] = timed(lambda: F.conv3d(xcl, wcl, b, padding=1))
        row["conv2d-stack" + tag] = timed(lambda: F.conv2d(stack, w2, b))
        row["conv2d-stack-cl" + tag] = timed(lambda: F.conv2d(stack_cl, w2_cl, b))
    row["pad"] = timed(lambda: F.pad(x, (1, 1, 1, 1, 2, 0), mode="replicate"))
    row["groupnorm+silu"] = timed(lambda: F.silu(F.group_norm(x, 32, gamma, gamma, 1e-6)))
    print(json.dumps(row), flush=True)
    results.append(row)
    del x, xp, xcl, frames, fp, stack, stack_cl
    torch.cuda.empty_cache()
if args.out:
    json.dump(results, open(args.out, "w"), indent=1)
