"""Query benchmark: cached read-model reads (Redis + near cache) beside uncached ones.

Usage: ``.venv/bin/python bench/queries.py [--json] [--reads N] [--uncached-reads N]
[--keys N] [--zipf S] [--invalidations-per-second R]``.

A throw-away PostgreSQL database holds a ``products`` read model of ``--keys`` rows
(~300-byte rows: id, slug, title, description, price, stock, rating); it is dropped on
exit, Ctrl-C and SIGTERM included. The query is "product by id" (SQLAlchemy Core, one
row as a dict). Keys are drawn from a Zipf distribution (exponent ``--zipf``) over the
products, the same sequence for every run. Everything is measured from one process and
one thread, one read at a time, in the same invocation:

``cached_read_throughput`` (reads/s; baseline: the same reads straight from PostgreSQL)
    ``--reads`` reads through :class:`projections.redis_cache.RedisCache` (cache-aside,
    single flight, near cache kept coherent by Redis client tracking), after
    ``--warmup-reads`` reads that are not counted (a steady state: a running service's
    cache has seen its keys; the table notes how many counted reads were of keys never
    read before, each a miss whatever the cache does). Meanwhile another process invalidates
    ``--invalidations-per-second`` products (drawn from the same Zipf distribution)
    through its own RedisCache, as applied batches would; so the figure includes misses
    (read model + Redis store) and the near cache's reaction to Redis's pushes.

``cached_read_p99`` (ms; baseline: the uncached p99)
    The 99th percentile of those reads' latencies, misses included.

``cache_hit_ratio``
    Hits / reads over the counted reads (near cache or Redis).

``cached_read_throughput_redis_only`` (reads/s; baseline: uncached)
    The same cached run with the near cache off: one Redis round trip per hit, the limit
    ``LIMITS.md`` puts at ~10,000 reads/s per process.

The machine is shared and noisy: compare the figures of one run with each other.
"""

from __future__ import annotations

import argparse
import bisect
import contextlib
import itertools
import multiprocessing
import random
import signal
import statistics
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import orjson
import sqlalchemy as sa

from bench.common import Figure, print_figures
from bench.relay import Databases
from projections.cache import CacheHooks
from projections.redis_cache import RedisCache
from workers.logs import configure_logging

DEFAULT_DSN = "postgresql://postgres@127.0.0.1:5432/postgres"
REDIS_URL = "redis://127.0.0.1:6379/0"
PROJECTION = "product_catalog"
THROUGHPUT_TARGET = 15_000.0
RATIO_TARGET = 10.0
P99_TARGET_MS = 2.0

metadata = sa.MetaData()
products = sa.Table(
    "products",
    metadata,
    sa.Column("product_id", sa.Text, primary_key=True),
    sa.Column("slug", sa.Text, nullable=False),
    sa.Column("title", sa.Text, nullable=False),
    sa.Column("description", sa.Text, nullable=False),
    sa.Column("price_cents", sa.BigInteger, nullable=False),
    sa.Column("stock", sa.Integer, nullable=False),
    sa.Column("rating", sa.Float, nullable=False),
    sa.Column("reviews", sa.Integer, nullable=False),
)


@dataclass(frozen=True, slots=True)
class Run:
    reads: int
    seconds: float
    p50_ms: float
    p99_ms: float
    hits: int

    @property
    def rate(self) -> float:
        return self.reads / self.seconds

    @property
    def hit_ratio(self) -> float:
        return self.hits / self.reads


class Counting(CacheHooks):
    def __init__(self) -> None:
        self.hits = 0

    def hit(self, projection: str) -> None:
        self.hits += 1


def zipf_keys(keys: int, exponent: float, count: int, seed: int) -> list[str]:
    weights = [1 / (rank**exponent) for rank in range(1, keys + 1)]
    cumulative = list(itertools.accumulate(weights))
    rng = random.Random(seed)
    total = cumulative[-1]
    ids = [f"p{i}" for i in range(keys)]
    return [ids[bisect.bisect_left(cumulative, rng.random() * total)] for _ in range(count)]


def fill(url: str, keys: int) -> sa.Engine:
    engine = sa.create_engine(url.replace("postgresql://", "postgresql+psycopg://", 1))
    metadata.create_all(engine)
    rng = random.Random(1)
    rows = [
        {
            "product_id": f"p{i}",
            "slug": f"product-{i}",
            "title": f"Product number {i}",
            "description": "".join(rng.choices("abcdefghij klmnop", k=180)),
            "price_cents": rng.randint(100, 100_000),
            "stock": rng.randint(0, 500),
            "rating": round(rng.uniform(1, 5), 2),
            "reviews": rng.randint(0, 900),
        }
        for i in range(keys)
    ]
    with engine.begin() as conn:
        conn.execute(products.insert(), rows)
        conn.exec_driver_sql("ANALYZE products")
    return engine


def first_reads(keys: list[str], before: list[str]) -> int:
    """How many of ``keys`` are the first read of their key (after ``before``)."""
    seen = set(before)
    count = 0
    for key in keys:
        if key not in seen:
            seen.add(key)
            count += 1
    return count


def loader(engine: sa.Engine) -> Callable[[str], dict[str, Any] | None]:
    query = sa.select(products).where(products.c.product_id == sa.bindparam("id"))

    def load(product_id: str) -> dict[str, Any] | None:
        with engine.connect() as conn:
            row = conn.execute(query, {"id": product_id}).first()
        return None if row is None else dict(row._mapping)

    return load


def timed(read: Callable[[str], Any], keys: list[str]) -> tuple[float, list[float]]:
    latencies = []
    clock = time.perf_counter
    started = clock()
    for key in keys:
        before = clock()
        read(key)
        latencies.append(clock() - before)
    return clock() - started, latencies


def summarize(seconds: float, latencies: list[float], hits: int) -> Run:
    cuts = statistics.quantiles(latencies, n=100, method="inclusive")
    return Run(len(latencies), seconds, cuts[49] * 1000, cuts[98] * 1000, hits)


def uncached_run(engine: sa.Engine, keys: list[str]) -> Run:
    load = loader(engine)
    timed(load, keys[:200])  # connection and plan warm
    seconds, latencies = timed(load, keys)
    return summarize(seconds, latencies, 0)


def cached_run(
    engine: sa.Engine, prefix: str, keys: list[str], warmup: list[str], near: int
) -> Run:
    load = loader(engine)
    hooks = Counting()
    cache = RedisCache(REDIS_URL, key_prefix=prefix, near_cache_size=near, hooks=hooks)
    try:
        if cache.near is not None:
            cache.near.start()
        deadline = time.monotonic() + 5
        while cache.near is not None and not cache.near.live and time.monotonic() < deadline:
            time.sleep(0.01)

        def read(product_id: str) -> Any:
            tags = [f"product:{product_id}"]
            return cache.get_or_load(PROJECTION, product_id, tags, lambda: load(product_id))

        timed(read, warmup)
        hooks.hits = 0
        seconds, latencies = timed(read, keys)
        return summarize(seconds, latencies, hooks.hits)
    finally:
        cache.close()


def invalidator(prefix: str, keys: list[str], rate: float, stop: Any) -> None:
    """Another process: invalidates products at ``rate`` per second, as batches would."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    cache = RedisCache(REDIS_URL, key_prefix=prefix, near_cache_size=0)
    try:
        started = time.monotonic()
        for n, key in enumerate(itertools.cycle(keys)):
            if stop.is_set():
                return
            pause = started + n / rate - time.monotonic()
            if pause > 0:
                time.sleep(pause)
            cache.invalidate(PROJECTION, [f"product:{key}"])
    finally:
        cache.close()


@contextlib.contextmanager
def invalidating(prefix: str, keys: list[str], rate: float) -> Iterator[None]:
    if rate <= 0:
        yield
        return
    context = multiprocessing.get_context("spawn")
    stop = context.Event()
    process = context.Process(target=invalidator, args=(prefix, keys, rate, stop))
    process.start()
    try:
        yield
    finally:
        stop.set()
        process.join(timeout=10)
        if process.is_alive():
            process.kill()
            process.join()


@contextlib.contextmanager
def bench_database(admin_dsn: str) -> Iterator[str]:
    databases = Databases(admin_dsn)
    previous_term = signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)
    try:
        yield databases.create("queries")
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        try:
            databases.drop()
        finally:
            signal.signal(signal.SIGINT, signal.default_int_handler)
            signal.signal(signal.SIGTERM, previous_term)


def _raise_keyboard_interrupt(_signum: int, _frame: Any) -> None:
    raise KeyboardInterrupt


def delete_prefix(prefix: str) -> None:
    import redis

    with redis.Redis.from_url(REDIS_URL) as client:
        keys = list(client.scan_iter(match=prefix + "*", count=5000))
        for start in range(0, len(keys), 5000):
            client.delete(*keys[start : start + 5000])


def figures(uncached: Run, cached: Run, redis_only: Run) -> list[Figure]:
    return [
        Figure(
            "queries",
            "cached_read_throughput",
            cached.rate,
            "reads/s",
            uncached.rate,
            f">= {THROUGHPUT_TARGET:,.0f} and >= {RATIO_TARGET:.0f}x uncached",
            cached.rate >= THROUGHPUT_TARGET and cached.rate >= RATIO_TARGET * uncached.rate,
        ),
        Figure(
            "queries",
            "cached_read_p99",
            cached.p99_ms,
            "ms",
            uncached.p99_ms,
            f"<= {P99_TARGET_MS:.0f} ms",
            cached.p99_ms <= P99_TARGET_MS,
        ),
        Figure("queries", "cache_hit_ratio", cached.hit_ratio, "ratio", None, "", None),
        Figure(
            "queries",
            "cached_read_throughput_redis_only",
            redis_only.rate,
            "reads/s",
            uncached.rate,
            "",
            None,
        ),
    ]


def print_table(
    rows: list[Figure], uncached: Run, cached: Run, redis_only: Run, args: Any, cold: int
) -> None:
    console = print_figures(
        "queries: product by id, Zipf keys, one thread", ("cached", "uncached"), rows
    )
    console.print(
        f"{cold:,} of the counted reads were of keys never read before; "
        f"{cached.reads:,} cached reads (p50 {cached.p50_ms:.3f} ms) over {args.keys:,} keys, "
        f"Zipf {args.zipf}, {args.invalidations_per_second:g} invalidations/s from another "
        f"process; uncached: {uncached.reads:,} reads (p50 {uncached.p50_ms:.3f} ms); "
        f"Redis only: hit ratio {redis_only.hit_ratio:.4f}, p99 {redis_only.p99_ms:.3f} ms",
        highlight=False,
    )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    add = parser.add_argument
    add("--json", action="store_true", help="one JSON object per line per figure")
    add("--reads", type=int, default=200_000, help="counted cached reads")
    add("--warmup-reads", type=int, default=200_000, help="cached reads before counting")
    add("--uncached-reads", type=int, default=10_000, help="reads straight from PostgreSQL")
    add("--keys", type=int, default=10_000, help="products in the read model")
    add("--zipf", type=float, default=1.1, help="Zipf exponent of the key distribution")
    add("--invalidations-per-second", type=float, default=100.0, help="0: none")
    add("--dsn", default=DEFAULT_DSN, help="PostgreSQL admin DSN (a database is created there)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    configure_logging("warning")
    keys = zipf_keys(args.keys, args.zipf, args.reads, seed=2)
    warmup = zipf_keys(args.keys, args.zipf, args.warmup_reads, seed=3)
    churn = zipf_keys(args.keys, args.zipf, 100_000, seed=4)
    prefix = f"rmbench:{uuid.uuid4().hex[:10]}:"
    try:
        with bench_database(args.dsn) as url:
            engine = fill(url, args.keys)
            try:
                uncached = uncached_run(engine, keys[: args.uncached_reads])
                with invalidating(prefix, churn, args.invalidations_per_second):
                    cached = cached_run(engine, prefix, keys, warmup, near=50_000)
                delete_prefix(prefix)
                with invalidating(prefix, churn, args.invalidations_per_second):
                    redis_only = cached_run(engine, prefix, keys, warmup, near=0)
            finally:
                engine.dispose()
                delete_prefix(prefix)
    except KeyboardInterrupt:
        print("interrupted; bench database and keys dropped", file=sys.stderr)
        return 130
    rows = figures(uncached, cached, redis_only)
    if args.json:
        for row in rows:
            print(orjson.dumps(row.as_json()).decode())
    else:
        cold = first_reads(keys, warmup)
        print_table(rows, uncached, cached, redis_only, args, cold)
    return 0


if __name__ == "__main__":
    sys.exit(main())
