# syntax=docker/dockerfile:1.7
# FramePack image-to-video as a Cog container: Node 20 server on port 5000, onnxruntime-node 1.29.0 with its
# CUDA 13 execution provider, ffmpeg. Build with docker/build.sh (it computes the Cog labels), or with
# `cog build --dockerfile Dockerfile --openapi-schema openapi.json`.

ARG NODE_IMAGE=node:20-bookworm-slim
ARG CUDA_IMAGE=nvidia/cuda:13.0.1-cudnn-runtime-ubuntu24.04

# ---- build: compile TypeScript, keep production dependencies, add the CUDA provider ----
FROM ${NODE_IMAGE} AS build
WORKDIR /opt/framepack
COPY package.json package-lock.json .npmrc ./
# .npmrc skips onnxruntime-node's install script (it downloads the CUDA 12 provider from NuGet); the CUDA 13
# provider for 1.29.0 comes from npm below.
RUN npm ci --no-audit --no-fund
COPY tsconfig.json ./
COPY src ./src
COPY scripts ./scripts
COPY test ./test
COPY models ./models
RUN npx tsc -p . && npm prune --omit=dev --no-audit --no-fund
# The provider must sit next to libonnxruntime.so.1 and match its version exactly (1.29.0).
ARG ORT_CUDA_PACKAGE=com.github.asus4.onnxruntime.linux-x64-gpu@0.4.9
RUN set -eux; \
    mkdir /tmp/ort-cuda; cd /tmp/ort-cuda; \
    npm pack --silent "$ORT_CUDA_PACKAGE"; \
    tar -xzf ./*.tgz; \
    dest=/opt/framepack/node_modules/onnxruntime-node/bin/napi-v6/linux/x64; \
    for lib in libonnxruntime_providers_cuda.so libonnxruntime_providers_shared.so; do \
      found="$(find package -name "$lib" -print -quit)"; \
      test -n "$found" || { echo "missing $lib in $ORT_CUDA_PACKAGE" >&2; exit 1; }; \
      cp "$found" "$dest/"; \
    done; \
    cd /; rm -rf /tmp/ort-cuda

# ---- openapi: the schema, exported by docker/build.sh into the run.cog.openapi_schema label ----
FROM build AS openapi
RUN node dist/src/cli.js openapi > /openapi.json
FROM scratch AS openapi-export
COPY --from=openapi /openapi.json /openapi.json

# ---- runtime ----
FROM ${NODE_IMAGE} AS node
FROM ${CUDA_IMAGE}
# The DiT's kernels (FRAMEPACK_DIT_KERNELS) are compiled at run time by NVRTC: installed if the base image lacks
# it, and the build fails without it. They also call cuBLASLt, which the CUDA provider needs anyway: checked too.
RUN set -eux; \
    apt-get update; \
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends ffmpeg tini ca-certificates; \
    has_nvrtc() { ls /usr/local/cuda/lib64/libnvrtc.so.13* >/dev/null 2>&1 || ldconfig -p | grep -q 'libnvrtc\.so\.13'; }; \
    has_nvrtc || DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends cuda-nvrtc-13-0; \
    has_nvrtc; \
    ls /usr/local/cuda/lib64/libcublasLt.so.13* >/dev/null 2>&1 || ldconfig -p | grep -q 'libcublasLt\.so\.13'; \
    rm -rf /var/lib/apt/lists/*
COPY --from=node /usr/local/bin/node /usr/local/bin/node
WORKDIR /opt/framepack
COPY --from=build /opt/framepack/package.json ./package.json
COPY --from=build /opt/framepack/node_modules ./node_modules
COPY --from=build /opt/framepack/dist ./dist
COPY --from=build /opt/framepack/models ./models
COPY docker/python /usr/local/bin/python
RUN chmod 0755 /usr/local/bin/python

ENV NODE_ENV=production \
    FRAMEPACK_HOME=/opt/framepack \
    PORT=5000 \
    LD_LIBRARY_PATH=/usr/local/cuda/lib64:/usr/local/nvidia/lib:/usr/local/nvidia/lib64

# Predictions at once (one per GPU, up to this many): cog.yaml's concurrency.max, passed by docker/build.sh.
# The default is cog.yaml's value, so `cog build` (whose label comes from cog.yaml) agrees as well.
ARG COG_MAX_CONCURRENCY=1
ENV COG_MAX_CONCURRENCY=${COG_MAX_CONCURRENCY}

# Cog's labels. docker/build.sh passes the schema; `cog build --openapi-schema` writes the label itself (the
# argument is then empty). A schema that is given must be the one this image serves, or the build fails, and
# so must a concurrency.max in the config that differs from COG_MAX_CONCURRENCY.
ARG COG_OPENAPI_SCHEMA=""
ARG COG_CONFIG='{"build":{"gpu":true,"python_version":"3.12"}}'
ARG COG_VERSION=0.16.12
RUN set -eu; \
    printf '%s\n' "$COG_CONFIG" > /tmp/config.json; \
    node -e 'const m=(require("/tmp/config.json").concurrency||{}).max;if(m!==undefined&&String(m)!==process.env.COG_MAX_CONCURRENCY){console.error(`concurrency.max ${m} in the config differs from COG_MAX_CONCURRENCY=${process.env.COG_MAX_CONCURRENCY}`);process.exit(1)}'; \
    rm /tmp/config.json; \
    if [ -n "$COG_OPENAPI_SCHEMA" ]; then \
      node dist/src/cli.js openapi > /tmp/served.json; \
      printf '%s\n' "$COG_OPENAPI_SCHEMA" > /tmp/label.json; \
      node -e 'const a=require("/tmp/served.json"),b=require("/tmp/label.json");if(JSON.stringify(a)!==JSON.stringify(b)){console.error("run.cog.openapi_schema differs from the schema this image serves");process.exit(1)}'; \
      rm /tmp/served.json /tmp/label.json; \
    else \
      echo "warning: COG_OPENAPI_SCHEMA is empty; build with docker/build.sh or cog build --openapi-schema" >&2; \
    fi; \
    python -m pip freeze; \
    python -m cog.server.http --version
LABEL run.cog.config="${COG_CONFIG}" \
      run.cog.openapi_schema="${COG_OPENAPI_SCHEMA}" \
      run.cog.version="${COG_VERSION}" \
      run.cog.has_init="true" \
      org.opencontainers.image.licenses="MIT"

EXPOSE 5000
# Cog bind-mounts a project at /src: the server lives in /opt/framepack.
WORKDIR /src
ENTRYPOINT ["/usr/bin/tini", "--"]
CMD ["python", "-m", "cog.server.http"]
