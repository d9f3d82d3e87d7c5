#!/usr/bin/env bash
# On the GPU machine, in the project root, once `source /tmp/gpu/unpack.sh` has run and dist/ is built:
# the CUDA provider's node placement for every graph, then the fixture parity suite on CUDA.
# Writes into $OUT (or ./gpu-out): placement.txt, placement.log.gz (ONNX Runtime's verbose placement log),
# parity.txt (node --test output) and parity.json (every error measured).
set -u
out=${OUT:-gpu-out}; mkdir -p "$out"
nvidia-smi --query-gpu=name,driver_version,memory.total,memory.used --format=csv > "$out/gpu.txt"
for p in policy float32; do
  echo "@precision $p" >&2
  node dist/scripts/gpu/placement.js --precision "$p"
done > "$out/placement.txt" 2> >(gzip > "$out/placement.log.gz")
cat "$out/placement.txt"
FRAMEPACK_GPU_REPORT="$out/parity.json" node --test --test-concurrency=1 dist/test/gpu/parity.test.js > "$out/parity.txt" 2>&1
echo "parity exit code $?"
grep -E '^# (tests|pass|fail|skipped)|^not ok|relative L2' "$out/parity.txt" | head -60
