"""``make bench``: run every component's benchmark script in turn.

Each ``bench/<component>_bench.py`` writes ``bench/results/<component>.json`` and
``.md``; this runner only sequences them (one at a time: on a 2-core machine two
benchmarks running together measure each other) and reports which failed.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
DOC = HERE.parent / "docs" / "benchmarks.md"


def collate() -> None:
    """docs/benchmarks.md: every component's latest results, one section each."""
    parts = ["# Benchmarks", "",
             "The latest `make bench` results, collated from `bench/results/*.md` by `bench/run.py`. Every figure",
             "is a ratio against a baseline measured in the same run, or a count; each section names the machine",
             "and the versions it ran with.", ""]
    for result in sorted((HERE / "results").glob("*.md")):
        lines = result.read_text().strip().splitlines()
        if not lines or not lines[0].startswith("# "):
            lines = [f"# {result.stem}", "", *lines]
        # Nest each result's headings one level under this page's title.
        parts += [("#" + line) if line.startswith("#") else line for line in lines] + [""]
    DOC.write_text("\n".join(parts))


def main(argv: list[str]) -> int:
    only = set(argv)
    scripts = sorted(p for p in HERE.glob("*_bench.py") if not only or p.stem.removesuffix("_bench") in only)
    if not scripts:
        print("bench: no benchmark scripts found", file=sys.stderr)
        return 1
    failed = []
    for script in scripts:
        print(f"bench: {script.stem} ...", flush=True)
        start = time.monotonic()
        result = subprocess.run([sys.executable, str(script)], cwd=HERE.parent)
        print(f"bench: {script.stem} finished in {time.monotonic() - start:.0f}s (exit {result.returncode})")
        if result.returncode != 0:
            failed.append(script.stem)
    collate()
    if failed:
        print(f"bench: failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    print(f"bench: results in {HERE / 'results'}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
