#!/usr/bin/env bash
# Runs `bench-server` under heaptrack for the load generator, so that the server's heap can be
# attributed to call sites by `heap_by_site.py` (one scenario a run: one trace each):
#
#   NX_PLUGIN_DIR=build/plugins $CARGO_TARGET_DIR/release/loadgen --nodes 10000 \
#       --streams-per-conn 50 --protocols sotw --impls ours --grouping node --updates 1 \
#       --server-bin benches/heap/heaptrack-server.sh --out /tmp/heap-loadgen
#   benches/heap/heap_by_site.py /tmp/heap/bench-server.*.raw.zst
#
# The trace is recorded raw (`heaptrack --raw`): heaptrack 1.4's own interpreter aborts with
# `std::bad_alloc` on our release binary, and the raw trace is all `heap_by_site.py` needs.
# Only the server's protocol lines (`ready`, `updated`, `groups`) reach the load generator on
# stdout; heaptrack's messages go to HEAP_OUT/heaptrack.log. Under the wrapper, the load
# generator's "server memory per node" reads the wrapper's RSS and means nothing: read the
# heap instead, and take RSS from a run without the wrapper.
#
# HEAP_OUT: where traces go (default /tmp/heap). HEAP_SERVER_BIN: the server binary (default
# $CARGO_TARGET_DIR/release/bench-server, else target/release/bench-server).
set -euo pipefail
out=${HEAP_OUT:-/tmp/heap}
bin=${HEAP_SERVER_BIN:-${CARGO_TARGET_DIR:-target}/release/bench-server}
mkdir -p "$out"
heaptrack --raw -o "$out/bench-server.$(date +%s%N)" "$bin" "$@" \
    > >(grep --line-buffered -E '^(ready|updated|groups)( |$)') 2>>"$out/heaptrack.log"
