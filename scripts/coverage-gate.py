#!/usr/bin/env python3
"""Fails when a module's line coverage is under the floor.

Reads the JSON that `cargo llvm-cov report --json` writes (llvm-cov's export format; per-file
summaries are enough, so `--summary-only` is fine) and, for each module folder named on the
command line, adds up the line counts of every source file under it. The figures are llvm-cov's
own, the ones `cargo llvm-cov report --summary-only` prints; like them, they count the lines of
`#[cfg(test)]` modules too.

    scripts/coverage-gate.py target/coverage/coverage.json --min 80 host/src/cache host/src/xds

Exits 1, naming each module under the floor and its percentage, or a module with no
instrumented file (a misspelt path must not pass).
"""

import argparse
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def percent(covered: int, count: int) -> float:
    return 100.0 * covered / count if count else 100.0


def file_lines(export: Path) -> dict:
    """Maps each source file in the export to (lines covered, lines instrumented)."""
    try:
        data = json.loads(export.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise SystemExit(f"coverage gate: cannot read {export}: {e}")
    if not isinstance(data, dict) or data.get("type") != "llvm.coverage.json.export":
        raise SystemExit(f"coverage gate: {export} is not an llvm-cov JSON export")
    out = {}
    for unit in data["data"]:
        for f in unit["files"]:
            lines = f["summary"]["lines"]
            covered, count = out.get(Path(f["filename"]).resolve(), (0, 0))
            out[Path(f["filename"]).resolve()] = (
                covered + lines["covered"],
                count + lines["count"],
            )
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("export", type=Path, help="JSON from `cargo llvm-cov report --json`")
    parser.add_argument("modules", nargs="+", help="module folders, relative to the repo root")
    parser.add_argument("--min", type=float, required=True, help="floor, percent of lines")
    args = parser.parse_args()

    files = file_lines(args.export)
    failures = []
    print(f"line coverage by module (floor {args.min:g}%):")
    for module in args.modules:
        root = (REPO / module).resolve()
        mine = {p: lines for p, lines in files.items() if root in p.parents}
        if not mine:
            print(f"  {module:<16} no instrumented file")
            failures.append(f"{module} has no instrumented file in {args.export}")
            continue
        covered = sum(c for c, _ in mine.values())
        count = sum(n for _, n in mine.values())
        pct = percent(covered, count)
        ok = pct >= args.min
        print(
            f"  {module:<16} {pct:5.1f}%  {covered}/{count} lines"
            f"  {'ok' if ok else f'BELOW {args.min:g}%'}"
        )
        if not ok:
            # The weakest files first: where a test would lift the module most.
            for path, (c, n) in sorted(mine.items(), key=lambda f: percent(*f[1])):
                print(f"      {str(path.relative_to(REPO)):<36} {percent(c, n):5.1f}%  {c}/{n}")
            failures.append(f"{module} has {pct:.1f}% line coverage, below the {args.min:g}% floor")

    for failure in failures:
        print(f"coverage gate: {failure}", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
