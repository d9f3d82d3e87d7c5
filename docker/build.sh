#!/bin/sh
# Builds the container with Cog's labels: the OpenAPI schema is generated from the sources by the image's
# own `openapi` stage (exported with BuildKit), cog.yaml is converted to JSON, then the image is built with
# both as build arguments, and concurrency.max as COG_MAX_CONCURRENCY (the Dockerfile checks the schema
# against what the image serves, and the concurrency against the config).
#   docker/build.sh [image-tag] [extra docker build args...]
set -eu
cd "$(dirname "$0")/.."
tag="${1:-framepack-cog}"
[ $# -gt 0 ] && shift
out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT
docker build --target openapi-export --output "type=local,dest=$out" "$@" .
config="$(node docker/cog-config.mjs cog.yaml)"
concurrency="$(node -e 'console.log((JSON.parse(process.argv[1]).concurrency||{}).max??1)' "$config")"
docker build -t "$tag" \
  --build-arg "COG_OPENAPI_SCHEMA=$(cat "$out/openapi.json")" \
  --build-arg "COG_CONFIG=$config" \
  --build-arg "COG_MAX_CONCURRENCY=$concurrency" \
  "$@" .
echo "built $tag"
