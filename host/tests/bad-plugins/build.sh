#!/usr/bin/env bash
# Builds the corpus of bad plugins for the host's `plugins_bad` tests: one component per
# misbehaviour of `misbehave` (one Cargo feature each), the pass-through build as `bad_none`,
# `foreign-import`, and the hand-assembled components of `handmade`. Each lands in OUT_DIR as
# bad_<name with - as _>.wasm.
#
#   host/tests/bad-plugins/build.sh OUT_DIR
#
# The dependencies build once and are shared by every variant: a variant that changed nothing
# costs cargo's check and a re-link of the small `misbehave` crate (cargo rebuilds it whenever
# the feature differs from the last build, since all variants share one output file).
set -euo pipefail

if [[ $# -ne 1 ]]; then
    echo "usage: $0 OUT_DIR" >&2
    exit 2
fi

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../../.." && pwd)
# Resolved before leaving the caller's directory: both may be relative to it.
out=$(realpath -m -- "$1")
target=$(realpath -m -- "${CARGO_TARGET_DIR:-$root/target}")
export CARGO_TARGET_DIR="$target"
built="$target/wasm32-wasip2/release"
features=(panic endless-loop alloc-1gib garbage-body unknown-type duplicate-names oversized-output panic-on-canary drop-clusters read-file get-flood get-loop stack-overflow error-log-flood)

cd "$root"
mkdir -p "$out"

# Copies a fresh build to OUT_DIR through a temporary name: a reader never sees half a file,
# and the copy never shares an inode with cargo's (hard-linked) output.
install_as() {
    local from="$built/$1.wasm" to="$out/bad_${2//-/_}.wasm"
    cp -- "$from" "$to.tmp"
    mv -f -- "$to.tmp" "$to"
}

build() {
    cargo build --quiet --target wasm32-wasip2 --release "$@"
}

build -p foreign-import
install_as foreign_import foreign-import

build -p misbehave
install_as misbehave none

for feature in "${features[@]}"; do
    build -p misbehave --features "$feature"
    install_as misbehave "$feature"
done

# Components Rust cannot build (two memories, an output that aliases one body), written by a
# small native program with wasm-encoder.
cargo run --quiet -p handmade -- "$out"

echo "bad plugins in $out: bad_none bad_foreign_import$(printf ' bad_%s' "${features[@]//-/_}") bad_two_memories bad_aliased_output"
