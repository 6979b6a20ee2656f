"""The cost of one rate-limit check beside a plain Redis GET, measured in the same run.

Each round times one GET and one check of every kind, interleaved, so a noisy moment on
the machine hits all of them alike; the table gives the median and p99 in microseconds
and the ratio of medians to the GET (target: at most 2x). The checks go through
`cyberlab.ratelimit.hit`, the path every API request takes, on the same connection pool
as the GET. The memory a bucket costs in Redis is measured after.

    .venv/bin/python bench/ratelimit_bench.py

Variables: BENCH_RATELIMIT_ROUNDS (20000), BENCH_REDIS_DB (14, flushed of its
`ratelimit:bench:*` keys only).
"""

from __future__ import annotations

import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.common import bench_env  # noqa: E402

ROUNDS = int(os.environ.get("BENCH_RATELIMIT_ROUNDS", "20000"))
WARMUP = 1000
RESULTS = ROOT / "bench" / "results"


def main() -> None:
    for name, value in bench_env().items():
        os.environ.setdefault(name, value)
    import django

    django.setup()
    from cyberlab import ratelimit, redis_client
    from cyberlab.ratelimit import Bucket, Rate

    client = redis_client.get_client()
    for key in client.scan_iter("ratelimit:bench:*"):
        client.delete(key)
    client.set("ratelimit:bench:plain", "1")

    def bucket(name: str, limit: int, window: float = 60.0) -> Bucket:
        return Bucket(ratelimit.key(scope="bench", ident=name), Rate(limit=limit, window=window))

    admitted = [bucket("admitted", 1_000_000_000)]
    refused = [bucket("refused", 10)]
    login = [bucket("login-ip", 1_000_000_000), bucket("login-user", 1_000_000_000)]
    for _ in range(10):
        ratelimit.hit(refused)

    cases = {
        "GET (plain)": lambda: client.get("ratelimit:bench:plain"),
        "check, admitted (1 bucket)": lambda: ratelimit.hit(admitted),
        "check, refused (full bucket)": lambda: ratelimit.hit(refused),
        "check, login (2 buckets)": lambda: ratelimit.hit(login),
    }
    timings: dict[str, list[float]] = {name: [] for name in cases}
    for round_number in range(WARMUP + ROUNDS):
        for name, call in cases.items():
            started = time.perf_counter_ns()
            call()
            elapsed = (time.perf_counter_ns() - started) / 1000
            if round_number >= WARMUP:
                timings[name].append(elapsed)

    baseline = statistics.median(timings["GET (plain)"])
    rows = ["| operation | median µs | p99 µs | x GET |", "|---|---:|---:|---:|"]
    for name, values in timings.items():
        values.sort()
        median = statistics.median(values)
        p99 = values[int(len(values) * 0.99) - 1]
        rows.append(f"| {name} | {median:.1f} | {p99:.1f} | {median / baseline:.2f} |")

    memory = ["| bucket holding | bytes in Redis |", "|---:|---:|"]
    for members in (10, 128, 1200):
        sized = bucket(f"memory-{members}", members)
        for _ in range(members):
            ratelimit.hit([sized])
        memory.append(f"| {members} requests | {client.memory_usage(sized.key):,} |")

    for key in client.scan_iter("ratelimit:bench:*"):
        client.delete(key)
    version = client.info("server")["redis_version"]
    header = (
        f"Rate-limit check vs plain GET: {ROUNDS} interleaved rounds after {WARMUP} warm-up, "
        f"Redis {version}; the admitted buckets grow to one member per round (sliding log)"
    )
    report = f"{header}\n\n" + "\n".join(rows) + "\n\nMemory of one bucket:\n\n" + "\n".join(memory) + "\n"
    print(f"\n{report}")
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "ratelimit.md").write_text(report)


if __name__ == "__main__":
    main()
