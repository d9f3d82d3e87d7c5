#!/usr/bin/env bash
# Packs node, the runtime node_modules (linux x64 only) and ORT 1.29.0's CUDA 13 provider into parts small
# enough to send one per call to the GPU machine (no network, no Node there). Same layout and unpacker as the
# shared gpu-bundle.sh, minus what the GPU machine never runs: other platforms' tokenizers builds and the
# TypeScript compiler (dist/ is built here and carried with each call).
#
#   scripts/gpu/bundle.sh            from the project root; writes .gpu/1..N and .gpu/unpack.sh
#   GPU_PART_MB=16 (default)         size of each part: a part and the tracked tree (~42 MB, most of it
#                                    test/fixtures) must stay under 64 MiB a call. Fewer calls: take the
#                                    fixtures out of the index for the GPU calls (`git rm -r -q --cached
#                                    test/fixtures` and `/test/fixtures/` in .git/info/exclude; the tree is
#                                    then ~2 MB), use GPU_PART_MB=52 (4 parts), and `git reset -q --
#                                    test/fixtures` afterwards, before any commit.
# On the GPU machine: copy every part into /tmp/gpu, then `source /tmp/gpu/unpack.sh` in the project root.
set -euo pipefail
PART_MB=${GPU_PART_MB:-16}
unpack=${GPU_UNPACK:-../shared/scripts/gpu-unpack.sh}
[ -f "$unpack" ] || { echo "unpacker $unpack not found (set GPU_UNPACK)" >&2; exit 1; }
ORT_VERSION=$(node -p "require('onnxruntime-node/package.json').version")
[ "$ORT_VERSION" = "1.29.0" ] || { echo "onnxruntime-node is $ORT_VERSION; the CUDA 13 provider on npm is built for 1.29.0" >&2; exit 1; }
rm -rf .gpu && mkdir -p .gpu/pack
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cp "$(command -v node)" "$work/node" && strip "$work/node" 2>/dev/null || true
tar -cf - --exclude='node_modules/onnxruntime-node/bin/napi-v6/win32' \
  --exclude='node_modules/onnxruntime-node/bin/napi-v6/darwin' \
  --exclude='node_modules/onnxruntime-node/bin/napi-v6/linux/arm64' \
  --exclude='node_modules/@img/sharp-*darwin*' --exclude='node_modules/@img/sharp-*win32*' \
  --exclude='node_modules/@img/sharp-*arm*' --exclude='node_modules/.cache' \
  --exclude='node_modules/@typescript' --exclude='node_modules/typescript' \
  --exclude='node_modules/tokenizers/tokenizers.android-*' --exclude='node_modules/tokenizers/tokenizers.darwin-*' \
  --exclude='node_modules/tokenizers/tokenizers.win32-*' --exclude='node_modules/tokenizers/tokenizers.linux-arm*' \
  --exclude='node_modules/tokenizers/tokenizers.linux-x64-musl.node' \
  node_modules -C "$work" node | xz -T0 -6 > .gpu/pack/rt.tar.xz
(cd "$work" && npm pack --silent com.github.asus4.onnxruntime.linux-x64-gpu@0.4.9 >/dev/null && tar xzf com.github.asus4.onnxruntime.linux-x64-gpu-0.4.9.tgz)
so="$work/package/Plugins/Linux/x64"
strip "$so/libonnxruntime_providers_cuda.so" 2>/dev/null || true
tar -cf - -C "$so" libonnxruntime_providers_cuda.so libonnxruntime_providers_shared.so | xz -T0 -6 > .gpu/pack/cuda.tar.xz
(cd .gpu/pack && split -b "${PART_MB}M" -d -a 2 rt.tar.xz rt.part. && split -b "${PART_MB}M" -d -a 2 cuda.tar.xz cuda.part. && rm rt.tar.xz cuda.tar.xz)
# Fill parts up to PART_MB each (several small pieces may share one part).
n=0; used=$((PART_MB + 1))
for f in $(ls -S .gpu/pack/*.part.*); do
  sz=$(( ($(stat -c %s "$f") + 1048575) / 1048576 ))
  if [ $((used + sz)) -gt "$PART_MB" ]; then n=$((n + 1)); used=0; mkdir -p ".gpu/$n"; cp "$unpack" ".gpu/$n/unpack.sh"; fi
  mv "$f" ".gpu/$n/"; used=$((used + sz))
done
rm -rf .gpu/pack
cp "$unpack" .gpu/unpack.sh
echo "$n parts:"; du -sh .gpu/[0-9]* | sort -V
