#!/usr/bin/env bash
# Builds the hot-reload test plugins into OUT_DIR: tagger_v1.wasm … tagger_v3.wasm, each
# stamping its own version on the route tables it touches (and, with the config
# `{ clusters = true }`, on clusters); and printer.wasm, which writes to
# stdout and stderr; reader.wasm, whose result depends on some node fields only; legacy.wasm,
# built against contract 0.1.0.
set -euo pipefail
out="${1:?usage: build.sh OUT_DIR}"
root="$(cd "$(dirname "$0")/../../.." && pwd)"
target="${CARGO_TARGET_DIR:-$root/target}"
mkdir -p "$out"
for v in v1 v2 v3; do
  TAGGER_VERSION="$v" cargo build --quiet --manifest-path "$root/Cargo.toml" --target wasm32-wasip2 --release -p tagger
  cp "$target/wasm32-wasip2/release/tagger.wasm" "$out/tagger_$v.wasm"
done
for p in printer reader legacy; do
  cargo build --quiet --manifest-path "$root/Cargo.toml" --target wasm32-wasip2 --release -p "$p"
  cp "$target/wasm32-wasip2/release/$p.wasm" "$out/$p.wasm"
done
