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
    if failed:
        print(f"bench: failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    print(f"bench: results in {HERE / 'results'}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
