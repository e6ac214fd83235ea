"""Run every benchmark and write one report of their ratio tables, with the machine.

Usage: ``python benchmarks/run_all.py [--quick] [--out benchmarks/RESULTS.md]`` (``make bench``).
Each ``bench_*.py`` compares prefect-memory with the raw client doing the same work in the
same run (redis-py pipelines, pyarrow ``write_dataset``, pandas ``resample``...) and with the
Prefect peer (prefect-redis ``RedisDatabase``) where there is one; this script collects what
they print under a header describing the machine, so figures are never read without it.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path

HERE = Path(__file__).resolve().parent
QUICK_ARGS = {
    "bench_redis.py": ["--quick"],
    "bench_archive.py": ["--quick"],
    "bench_hybrid.py": ["--quick"],
    "bench_journal.py": ["--quick"],
    "bench_downsample.py": ["--points", "1000000", "--repeat", "1"],
    "bench_async.py": ["--quick"],
    "bench_migrate.py": ["--quick"],
    "bench_resp.py": ["--quick"],
}
PACKAGES = ["prefect-memory", "redis", "pymongo", "s3fs", "pyarrow", "pandas", "numpy", "prefect"]


def machine() -> list[str]:
    """Lines describing the machine and the versions that matter for the figures."""
    load = os.getloadavg() if hasattr(os, "getloadavg") else (float("nan"),) * 3
    versions = []
    for name in PACKAGES:
        try:
            versions.append(f"{name} {metadata.version(name)}")
        except metadata.PackageNotFoundError:
            versions.append(f"{name} (not installed)")
    cpu = platform.processor() or platform.machine()
    return [
        f"- date: {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M UTC}",
        f"- machine: {platform.node()} {platform.system()} {platform.release()}, {cpu}, "
        f"{os.cpu_count()} CPUs, load {load[0]:.1f} {load[1]:.1f} {load[2]:.1f}",
        f"- python: {platform.python_version()}",
        f"- packages: {', '.join(versions)}",
    ]


def main(argv: list[str] | None = None) -> int:
    """Run the benchmarks and write the report; exit 1 if a benchmark crashed."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller runs of every benchmark")
    parser.add_argument("--out", default=str(HERE / "RESULTS.md"))
    parser.add_argument("--only", nargs="*", help="run only these bench_*.py files")
    args = parser.parse_args(argv)
    scripts = sorted(HERE.glob("bench_*.py"))
    if args.only:
        scripts = [s for s in scripts if s.name in set(args.only)]
    sections = ["# Benchmark results", "", *machine(), ""]
    failed = 0
    for script in scripts:
        extra = QUICK_ARGS.get(script.name, []) if args.quick else []
        print(f"=== {script.name} {' '.join(extra)}", flush=True)
        started = time.perf_counter()
        proc = subprocess.run(
            [sys.executable, str(script), *extra], capture_output=True, text=True, timeout=3600
        )
        seconds = time.perf_counter() - started
        print(proc.stdout, end="", flush=True)
        if proc.returncode:
            failed += 1
            print(proc.stderr[-4000:], file=sys.stderr)
        status = "ok" if proc.returncode == 0 else f"FAILED (exit {proc.returncode})"
        sections += [
            f"## {script.name} {' '.join(extra)}".rstrip(),
            "",
            f"{status}, {seconds:.0f} s",
            "",
            "```text",
            proc.stdout.rstrip() or "(no output)",
            "```",
            "",
        ]
    Path(args.out).write_text("\n".join(sections), encoding="utf-8")
    print(f"report written to {args.out}")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
