#!/usr/bin/env python3
"""What the server's heap holds per connected node, by call site, from a raw heaptrack trace.

Reads a trace that `heaptrack-server.sh` recorded of `bench-server` under the load generator,
takes two moments — the baseline (by default the smallest live heap before the peak: started,
plugins loaded, no client yet) and the snapshot (by default the peak, which is what RSS keeps
under glibc) — and counts the allocations made after the baseline that are still live at the
snapshot. They are grouped into what they are for (HTTP/2 buffers, tonic's codec buffers, our
stream state, node records, …) by the innermost frame of their stack that names one, and
printed per node, in requested bytes and in glibc chunk bytes (8-byte header, 16-byte
alignment, 32 bytes at least: what the allocator really uses).

    benches/heap/heap_by_site.py /tmp/heap/bench-server.*.raw.zst           # the table
    benches/heap/heap_by_site.py TRACE --curve                              # live heap over time
    benches/heap/heap_by_site.py TRACE --sites 30                           # top call stacks
    benches/heap/heap_by_site.py TRACE --at 7000 --base 2700 --match 'h2::' # chosen moments (ms)

Symbols come from `addr2line` on the traced executable (named in the trace), so the release
build must be the one traced. Needs `zstd` for a compressed trace.
"""

import argparse
import collections
import re
import subprocess
import sys

# What an allocation is for: the first category whose pattern matches a frame, frames taken
# from the innermost out. Order matters only between patterns that match the same frame.
CATEGORIES = [
    ("tonic encode buffer (per stream)", r"tonic::codec::encode"),
    ("tonic decode buffer (per stream)", r"tonic::codec::decode"),
    ("prost-reflect Envoy schema (one-off)", r"prost_reflect|nebucloud_xds::schema"),
    ("xds: stream future (Door::sotw/delta box)", r"nebucloud_xds::xds::services::Door::(sotw|delta)$"),
    ("xds: node registry, per-type records", r"nebucloud_xds::xds::status::(StreamRecord::(sent|acked|nacked)|NodeRecord::type_mut)"),
    ("xds: node registry, node records", r"nebucloud_xds::xds::status::"),
    ("xds: SotW/Delta stream state", r"nebucloud_xds::xds::(sotw|delta)::"),
    ("xds: stream shell (watch, interval, node copy)", r"nebucloud_xds::xds::stream::|Node as core::clone::Clone|nebucloud_xds::cache::store::Cache::(sender|watch)"),
    ("pipeline: per-group/node records", r"nebucloud_xds::pipeline|nebucloud_xds::app::wiring"),
    ("plugins", r"nebucloud_xds::plugins|wasmtime|cranelift"),
    ("cache", r"nebucloud_xds::cache"),
    ("h2 connection codec (write 16 KiB, read 8 KiB, HPACK 4 KiB)", r"h2::codec|tokio_util::codec|h2::hpack"),
    ("h2 stream store and frame queues", r"h2::proto::streams"),
    ("h2 other", r"^<?h2::"),
    ("hyper/tonic per stream (H2Stream, Body, service futures)", r"hyper::proto::h2::server::H2Stream|tonic::body::Body::new|tonic::server::grpc|boxed_clone|Oneshot"),
    ("per-connection tasks (ours and tonic's), counters", r"tokio::runtime::task::core::Cell|serve_connection|nebucloud_xds::xds::(connection|counted|admission)|hyper_util|hyper::server|hyper::proto::h2::ping"),
    ("tokio timers", r"tokio::time"),
]


def chunk(size):
    """Bytes glibc's malloc uses for a request of `size`."""
    return max(32, (size + 8 + 15) // 16 * 16)


def lines(path):
    if path.endswith(".zst"):
        proc = subprocess.Popen(["zstd", "-dc", path], stdout=subprocess.PIPE, text=True, errors="replace")
        yield from proc.stdout
        proc.wait()
    else:
        with open(path, errors="replace") as f:
            yield from f


class Trace:
    """One pass over the trace: the live heap at every timestamp, and the stack tree."""

    def __init__(self, path):
        self.ips, self.parents = [0], [0]
        self.exe = None
        self.load = None
        self.nodes = None
        self.curve = []  # (ms, live bytes, allocation seq so far)
        live_bytes, seq, sizes = 0, 0, {}
        for line in lines(path):
            kind = line[0]
            if kind == "+":
                _, size, _trace, ptr = line.split()
                size = int(size, 16)
                sizes[ptr] = size
                live_bytes += size
                seq += 1
            elif kind == "-":
                size = sizes.pop(line.split()[1], None)
                if size is not None:
                    live_bytes -= size
            elif kind == "t":
                _, ip, parent = line.split()
                self.ips.append(int(ip, 16))
                self.parents.append(int(parent, 16))
            elif kind == "c":
                self.curve.append((int(line.split()[1], 16), live_bytes, seq))
            elif kind == "x" and self.exe is None:
                self.exe = line.split(maxsplit=2)[2].strip()
            elif kind == "X":
                m = re.search(r"--nodes (\d+)", line)
                self.nodes = int(m.group(1)) if m else None
            elif kind == "m" and self.load is None:
                fields = line.split()
                if fields[2] == "x":
                    self.load = int(fields[3], 16)

    def moment(self, ms):
        """The allocation count at the first timestamp at or after `ms`."""
        return next((s for t, _, s in self.curve if t >= ms), self.curve[-1][2])

    def live_between(self, path, base_seq, at_seq):
        """Allocations number `base_seq`+1 … `at_seq` still live after allocation `at_seq`:
        {trace index: [requested bytes, count, chunk bytes]}."""
        live, seq = {}, 0
        for line in lines(path):
            kind = line[0]
            if kind == "+":
                seq += 1
                if seq > at_seq:
                    break
                if seq > base_seq:
                    _, size, trace, ptr = line.split()
                    live[ptr] = (int(size, 16), int(trace, 16))
            elif kind == "-" and seq > base_seq:
                live.pop(line.split()[1], None)
        by_trace = collections.defaultdict(lambda: [0, 0, 0])
        for size, trace in live.values():
            e = by_trace[trace]
            e[0] += size
            e[1] += 1
            e[2] += chunk(size)
        return by_trace

    def stack(self, trace, depth=48):
        out = []
        while trace and len(out) < depth:
            out.append(self.ips[trace])
            trace = self.parents[trace]
        return out


def symbolize(trace, ips):
    """Function names of the executable's addresses; others are `?`."""
    mine = sorted(ip for ip in ips if trace.load < ip < 0x7F0000000000)
    names = {}
    for i in range(0, len(mine), 5000):
        batch = mine[i : i + 5000]
        out = subprocess.run(
            ["addr2line", "-f", "-C", "-e", trace.exe] + [hex(ip - trace.load) for ip in batch],
            capture_output=True, text=True, check=True,
        ).stdout.split("\n")
        for j, ip in enumerate(batch):
            names[ip] = re.sub(r"::h[0-9a-f]{16}$", "", out[2 * j])
    return names


def valley(curve, peak):
    """The quiet moment before the clients came: walking back from the clients' climb (the
    first moment at half the peak), the least live heap before it rises again by 5 MB or 30 %
    (start-up's own peak: plugins compiled, transient buffers freed)."""
    at = next(i for i, c in enumerate(curve) if c[1] >= peak[1] / 2)
    low = curve[at]
    for c in reversed(curve[:at]):
        if c[1] < low[1]:
            low = c
        elif c[1] > low[1] + max(5e6, 0.3 * low[1]):
            break
    return low


def category(frames):
    for frame in frames:
        for name, pattern in CATEGORIES:
            if re.search(pattern, frame):
                return name
    return "other"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("trace", help="a raw heaptrack trace (.raw or .raw.zst)")
    ap.add_argument("--at", type=int, help="snapshot at this ms (default: the peak)")
    ap.add_argument("--base", type=int, help="baseline at this ms (default: the least live heap before the snapshot)")
    ap.add_argument("--nodes", type=int, help="divide by this (default: the server's --nodes)")
    ap.add_argument("--curve", action="store_true", help="print the live heap over time")
    ap.add_argument("--sites", type=int, default=0, help="also print the N largest call stacks")
    ap.add_argument("--match", help="only stacks with a frame matching this regex")
    a = ap.parse_args()

    trace = Trace(a.trace)
    nodes = a.nodes or trace.nodes or 1
    if a.curve:
        step = max(1, len(trace.curve) // 60)
        for ms, live, _ in trace.curve[::step]:
            print(f"{ms:>8} ms  {live / 1e6:9.2f} MB live")
    peak = max(trace.curve, key=lambda c: c[1])
    at = a.at if a.at is not None else peak[0]
    base = a.base if a.base is not None else valley(trace.curve, peak)[0]
    by_trace = trace.live_between(a.trace, trace.moment(base), trace.moment(at))

    stacks = {t: trace.stack(t) for t in by_trace}
    names = symbolize(trace, {ip for s in stacks.values() for ip in s})
    frames = {t: [names.get(ip, "?") for ip in s] for t, s in stacks.items()}
    if a.match:
        by_trace = {t: v for t, v in by_trace.items() if any(re.search(a.match, f) for f in frames[t])}

    totals = collections.defaultdict(lambda: [0, 0, 0])
    for t, (size, count, chunks) in by_trace.items():
        e = totals[category(frames[t])]
        e[0] += size
        e[1] += count
        e[2] += chunks
    print(f"\n{trace.exe}: live at {at} ms, allocated after {base} ms, per node of {nodes}\n")
    print("| what | bytes/node (malloc chunks) | bytes/node requested | allocations/node |")
    print("|---|---:|---:|---:|")
    for name, (size, count, chunks) in sorted(totals.items(), key=lambda kv: -kv[1][2]):
        print(f"| {name} | {chunks / nodes:,.0f} | {size / nodes:,.0f} | {count / nodes:.2f} |")
    size, count, chunks = (sum(v[i] for v in totals.values()) for i in range(3))
    print(f"| **total** | **{chunks / nodes:,.0f}** | {size / nodes:,.0f} | {count / nodes:.2f} |")

    if a.sites:
        # A site: the innermost frame that is not the allocator or a collection; shown with
        # its largest stack.
        sites = collections.defaultdict(lambda: [0, 0, None, 0])
        skip = re.compile(r"^<?(alloc|core|std|hashbrown|bytes|indexmap|slab|dashmap|__rustc?)::|^\?")
        for t, (size, count, chunks) in by_trace.items():
            f = frames[t]
            site = next((x for x in f if not skip.match(x)), f[0] if f else "?")
            e = sites[site]
            e[0] += chunks
            e[1] += count
            if chunks > e[3]:
                e[2], e[3] = f, chunks
        for site, (chunks, count, f, _) in sorted(sites.items(), key=lambda kv: -kv[1][0])[: a.sites]:
            print(f"\n{chunks / nodes:8,.0f} B/node in {count / nodes:.2f} allocations/node: {site[:150]}")
            for frame in f[:10]:
                print(f"        {frame[:160]}")


if __name__ == "__main__":
    sys.exit(main())
