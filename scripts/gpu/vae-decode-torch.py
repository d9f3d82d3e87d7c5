"""The original's section decode on the GPU, by operator: diffusers' AutoencoderKLHunyuanVideo with random float16
weights of the real shapes (as ../shared/scripts/anchor/framepack_request.py builds it) decoding the last
section's latents at the 640 bucket through FramePack's vae_decode, untiled as its high-VRAM path runs it (6
temporal windows of 5 latents for 19). Prints the decode's wall time (median of 3 after a warm-up) and, for one
decode under torch.profiler, the CUDA time of each operator, to set beside ORT's profile of this project's
decoder (scripts/ort-profile.ts).

usage: python3 scripts/gpu/vae-decode-torch.py --src DIR [--latents 19] [--height 640 --width 608] [--out x.json]
(DIR as framepack_request.py's: framepack_src/diffusers_helper and diffusers_src/diffusers)
"""
import argparse, json, os, sys, time

ap = argparse.ArgumentParser()
ap.add_argument("--src", required=True)
ap.add_argument("--latents", type=int, default=19)
ap.add_argument("--height", type=int, default=640)
ap.add_argument("--width", type=int, default=608)
ap.add_argument("--out", default="")
args = ap.parse_args()
sys.path.insert(0, os.path.join(args.src, "diffusers_src"))
sys.path.insert(0, os.path.join(args.src, "framepack_src"))

import torch
from torch.profiler import ProfilerActivity, profile
from diffusers import AutoencoderKLHunyuanVideo
from diffusers_helper.hunyuan import vae_decode

torch.set_grad_enabled(False)
torch.set_default_dtype(torch.float16)
vae = AutoencoderKLHunyuanVideo()
torch.set_default_dtype(torch.float32)
for p in vae.parameters():
    p.data.normal_(0, 0.02)
vae = vae.to("cuda", torch.float16).eval()
latents = torch.randn(1, 16, args.latents, args.height // 8, args.width // 8, device="cuda")


def decode():
    torch.cuda.synchronize()
    t = time.perf_counter()
    out = vae_decode(latents, vae).cpu()
    torch.cuda.synchronize()
    return time.perf_counter() - t, out.shape


decode()  # cuDNN's first choices
walls = sorted(decode()[0] for _ in range(3))
torch.cuda.reset_peak_memory_stats()
with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
    profiled, shape = decode()
peak = torch.cuda.max_memory_allocated() / 2**30


def self_device_us(e):
    for k in ("self_device_time_total", "self_cuda_time_total"):
        if hasattr(e, k):
            return getattr(e, k)
    return 0


ops = [{"name": e.key, "ms": self_device_us(e) / 1000, "count": e.count} for e in prof.key_averages()]
ops = sorted((o for o in ops if o["ms"] > 0), key=lambda o: -o["ms"])
total = sum(o["ms"] for o in ops)
print(f"decode of {args.latents} latents at {args.height}x{args.width} -> {tuple(shape)}: "
      f"{walls[1]:.3f} s (median of 3; runs {', '.join(f'{w:.3f}' for w in walls)}), profiled {profiled:.3f} s, "
      f"peak {peak:.1f} GiB")
print(f"CUDA time {total:.0f} ms in operators and kernels (self time):")
for o in ops[:40]:
    print(f"  {o['ms']:9.1f} ms {100 * o['ms'] / total:5.1f} %  x{o['count']:<5d} {o['name'][:110]}")
if args.out:
    json.dump({"gpu": torch.cuda.get_device_name(0), "torch": torch.__version__, "latents": args.latents,
               "bucket": [args.height, args.width], "wallS": walls, "profiledS": profiled, "peakGiB": peak,
               "selfCudaMs": total, "ops": ops[:80]}, open(args.out, "w"), indent=1)
