#!/usr/bin/env bash
# One measurement round on the GPU machine, in steps that fit one call each (device time is scarce):
#   scripts/gpu/round.sh part DIR      copy a bundle part (scripts/gpu/bundle.sh) into /tmp/gpu
#   scripts/gpu/round.sh anchor ARCHIVE [REPEAT] [framepack_request.py args]   the original's whole request
#                                      (../shared/scripts/anchor/framepack_request.py, copied next to this script) on
#                                      FramePack/diffusers unpacked from ARCHIVE, into $ANCHOR_OUT.json (anchor.json),
#                                      with diffusers', torch's, cuDNN's and transformers' versions, the attention
#                                      PyTorch gives it and the host (CPU, GPU clocks, PCIe) in $ANCHOR_OUT-versions.txt;
#                                      TeaCache on: ANCHOR_OUT=anchor-teacache round.sh anchor ARCHIVE 1 --teacache 1
#   scripts/gpu/round.sh setup         node + node_modules + CUDA provider, a static ffmpeg, random full weights
#   scripts/gpu/round.sh parity        the CUDA parity suite (float32 with TF32 off at 1e-4), LoRA and the DiT kernels on CUDA
#   scripts/gpu/round.sh high|medium|low [request.js args]   the default request through the server; the caches:
#                                      round.sh high --input '{"use_teacache":true}' --then-input '{"cache":"magcache"}' --then-repeat 1
#   scripts/gpu/round.sh dit [dit-forward.js args]   the DiT forward alone, unfused against fused graphs
#   scripts/gpu/round.sh fp8           which FP8 ops the CUDA EP runs, bf16 vs FP8 GEMMs, the FP8 DiT's GPU test,
#                                      and the DiT forward bf16 against FP8 (amax by ReduceMax and by GlobalMaxPool)
#   scripts/gpu/round.sh profile [variants]   ONNX Runtime's profile of the DiT forward (fused by default) with
#                                      synchronous launches, summed per operator and graph place
#   scripts/gpu/round.sh forms         the decoder's causal convolution and GroupNorm in other layouts (ONNX Runtime) and
#                                      in PyTorch, at the decoder's largest shapes
#   scripts/gpu/round.sh vae           one section's decode, tiled and untiled, and the start image's encode, each
#                                      under the default provider options, prefer_nhwc and EXHAUSTIVE search
# Run from the folder that holds dist/ (the project root, or a copy of the build); results go to $OUT.
# Parts go to $GPU_TMP (default /tmp/gpu), so that rounds of different checkouts on one machine stay apart.
set -uo pipefail
tmp=${GPU_TMP:-/tmp/gpu}
out=${OUT:-gpu-out}; mkdir -p "$out"
here=$(pwd)
export FRAMEPACK_FIXTURES=${FRAMEPACK_FIXTURES:-$here/../.gpu/fx}
export FRAMEPACK_FFMPEG=$tmp/ffmpeg
# what unpack.sh exports, for the steps after `setup`
runtime() {
  export PATH=$tmp/rt:$PATH
  export LD_LIBRARY_PATH=/usr/local/cuda/targets/x86_64-linux/lib:/usr/lib/x86_64-linux-gnu${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
}
step=$1; shift
case "$step" in
  part)
    mkdir -p "$tmp" && cp "$1"/* "$tmp"/ && ls "$tmp" ;;
  anchor)
    # unpack.sh puts the system's cuDNN (9.14) on the library path, where PyTorch then fails to load its own
    # (9.19) and the original's attention falls back to a 3x slower kernel: the original runs without it
    unset LD_LIBRARY_PATH
    mkdir -p "$tmp/up" && tar -xJf "$1" -C "$tmp/up"
    nvidia-smi --query-gpu=name,driver_version,memory.total,memory.used --format=csv > "$out/gpu.txt"
    # the original's speed depends on these versions (docs/gpu.md, ninth round): keep them beside its figures
    { grep -m1 '^__version__' "$tmp/up/diffusers_src/diffusers/__init__.py"
      python3 -c 'import torch; print("torch", torch.__version__, "cudnn", torch.backends.cudnn.version())'
      python3 -c 'import transformers; print("transformers", transformers.__version__)'
      # the attention PyTorch gives the original's SDPA call on this host (the last line of torch-reference.py)
      [ -f scripts/gpu/torch-reference.py ] && (cd scripts/gpu && timeout 120 python3 torch-reference.py | tail -1)
      # this project's decode varied by lease while the original's did not (docs/gpu.md, tenth round): the host too
      lscpu | grep -E '^Model name|^CPU\(s\)'
      nvidia-smi --query-gpu=clocks.max.sm,clocks.max.memory,power.limit,pcie.link.gen.max,pcie.link.width.max --format=csv; } \
      > "$out/${ANCHOR_OUT:-anchor}-versions.txt" 2>&1
    PYTHONUNBUFFERED=1 python3 framepack_request.py --src "$tmp/up" --repeat "${2:-2}" "${@:3}" --out "$out/${ANCHOR_OUT:-anchor}.json" 2>&1 | tail -20 ;;
  setup)
    sed "s#/tmp/gpu#$tmp#g" "$tmp/unpack.sh" > "$tmp/unpack-here.sh" && source "$tmp/unpack-here.sh" || exit 1
    [ -x "$tmp/ffmpeg" ] || { xz -dc ffmpeg.xz > "$tmp/ffmpeg" && chmod +x "$tmp/ffmpeg"; }
    SECONDS=0
    [ -f bench/tmp/full/transformer/config.json ] || node dist/scripts/make-full-weights.js --out bench/tmp/full > "$out/weights.log" 2>&1
    echo "weights ready in $SECONDS s" ;;
  parity)
    runtime
    FRAMEPACK_GPU_REPORT="$out/parity.json" node --test --test-concurrency=1 dist/test/gpu/parity.test.js dist/test/gpu/dit-lora.test.js dist/test/gpu/dit-kernels.test.js > "$out/parity.txt" 2>&1
    echo "parity exit code $?"
    grep -E '^# (tests|pass|fail|skipped)|^ *not ok|relative L2' "$out/parity.txt" | head -40 ;;
  high|medium|low)
    runtime
    node dist/scripts/gpu/request.js --weights bench/tmp/full --policy "$step" --out "$out/request-$step.json" "$@" 2>&1 | tail -40
    gzip -f "$out/request-$step.server.log" 2>/dev/null; rm -f "$out"/*.mp4 ;;
  dit)
    runtime
    node dist/scripts/gpu/dit-forward.js --weights bench/tmp/full --out "$out/dit-forward.json" "$@" 2>&1 | tail -80 ;;
  fp8)
    runtime
    node dist/scripts/gpu/gemm-fp8.js --only 'dual.img.qkv|out,dual.img.ff.up,dual.img.ff.down' --runs 3 --out "$out/gemm-fp8.json" 2>&1 | cut -c1-900 | tail -16
    FRAMEPACK_GPU_REPORT="$out/fp8-dit.json" node --test dist/test/gpu/dit-fp8.test.js > "$out/fp8-test.txt" 2>&1
    grep -E '^# |^not ok|^ok' "$out/fp8-test.txt" | head -30
    node dist/scripts/gpu/dit-forward.js --weights bench/tmp/full --variant fused,fp8,fp8-pool --runs 3 --warmup 2 \
      --out "$out/dit-forward-fp8.json" 2>&1 | grep -E '"variant"|medianS|"value"|error' | cut -c1-300 ;;
  profile)
    runtime
    rm -rf "$tmp/prof"
    FRAMEPACK_ORT_PROFILE="$tmp/prof" CUDA_LAUNCH_BLOCKING=1 node dist/scripts/gpu/dit-forward.js --weights bench/tmp/full \
      --variant "${1:-fused}" --runs 2 --warmup 1 --out "$out/dit-profiled.json" > "$out/dit-profiled.log" 2>&1
    node dist/scripts/ort-profile.js "$tmp"/prof/dit-blocks_*.json --skip 1 --top 40 --out "$out/profile-summary.json" | tee "$out/profile.txt" | head -75 ;;
  forms)
    runtime
    node dist/scripts/gpu/vae-conv-forms.js --nhwc --out "$out/conv-forms.json" 2>&1 | grep -v 'onnxruntime:' | cut -c1-400
    python3 scripts/gpu/vae-conv-torch.py --out "$out/conv-torch.json" ;;
  vae)
    # every option, tiled and untiled; the whole output is kept (a tail of it once lost the summaries)
    runtime
    for tiling in on off; do
      for o in "" "vae:prefer_nhwc=1" "vae:cudnn_conv_algo_search=EXHAUSTIVE"; do
        echo "-- tiling $tiling, FRAMEPACK_CUDA_OPTIONS='$o'"
        FRAMEPACK_CUDA_OPTIONS="$o" node dist/scripts/gpu/vae-tiles.js --vae bench/tmp/full/vae --tiling $tiling 2>&1 | grep -v 'onnxruntime:'
      done
    done > "$out/vae.txt" 2>&1
    grep -E '^--|decode:|encode:|vae_decoder_tail' "$out/vae.txt" | cut -c1-200 ;;
  *) echo "unknown step $step" >&2; exit 2 ;;
esac
