"""Micro-benchmark: ``outbox.json_numbers.loads_exact`` / ``dumps_exact`` beside plain orjson.

Usage: ``.venv/bin/python bench/json_numbers.py [--json] [--number N]``.

Every event a projection applies is decoded once (its payload), and every cached value is
encoded and decoded: the exact helpers must cost next to nothing unless an integer orjson
would round is there. Three ~300-byte payloads, as the log returns them (text from
PostgreSQL, bytes from a cache):

``typical``
    an order: ids as text, small integers, a float, a timestamp as text.
``snowflake``
    the same with a 19-digit int64 id (a snowflake id, a nanosecond timestamp): orjson
    reads it exactly, so it must stay on the fast path.
``wide``
    the same with the integer 2**64, which orjson reads as a double (and refuses to write):
    the slow path's reason to be.

Figures (``<call>_<payload>``, nanoseconds per call, the best of 7 repeats of ``--number``
calls) are printed beside plain orjson measured in the same run, with ``ratio = value /
baseline``; orjson cannot write ``wide``, so ``dumps_wide`` has no baseline. With
``--json``, one JSON object per line per figure.
"""

from __future__ import annotations

import argparse
import sys
import timeit
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import Figure, print_figures  # noqa: E402
from outbox.json_numbers import dumps_exact, loads_exact  # noqa: E402

TYPICAL: dict[str, Any] = {
    "order_id": "3f2b9c1e-8a4d-4e5f-9b6a-1c2d3e4f5a6b",
    "customer_id": "c-10492",
    "total_cents": 129900,
    "currency": "EUR",
    "lines": [
        {"sku": "SKU-00042", "qty": 2, "price_cents": 49950},
        {"sku": "SKU-00917", "qty": 1, "price_cents": 30000},
    ],
    "placed_at": "2026-03-14T09:26:53.589793+00:00",
    "ratio": 0.125,
}
PAYLOADS: dict[str, dict[str, Any]] = {
    "typical": TYPICAL,
    "snowflake": {**TYPICAL, "message_id": 1790512345678901234},
    "wide": {**TYPICAL, "total_cents": 2**64},
}


def _best(call: Callable[[], Any], number: int) -> float:
    return min(timeit.repeat(call, number=number, repeat=7)) / number * 1e9


def figures(number: int) -> list[Figure]:
    rows = []
    for name, payload in PAYLOADS.items():
        blob = dumps_exact(payload)
        text = blob.decode()
        calls: list[tuple[str, Callable[[], Any], Callable[[], Any] | None]] = [
            ("loads_str", lambda t=text: loads_exact(t), lambda t=text: orjson.loads(t)),
            ("loads_bytes", lambda b=blob: loads_exact(b), lambda b=blob: orjson.loads(b)),
            (
                "dumps",
                lambda p=payload: dumps_exact(p),
                None if name == "wide" else lambda p=payload: orjson.dumps(p),
            ),
        ]
        for call, exact, plain in calls:
            baseline = None if plain is None else _best(plain, number)
            value = _best(exact, number)
            rows.append(Figure("json_numbers", f"{call}_{name}", value, "ns", baseline, "", None))
    return rows


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    add = parser.add_argument
    add("--json", action="store_true", help="one JSON object per line per figure")
    add("--number", type=int, default=100_000, help="calls per repeat")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    rows = figures(args.number)
    if args.json:
        for row in rows:
            print(orjson.dumps(row.as_json()).decode())
        return 0
    console = print_figures(
        "json_numbers: exact JSON numbers vs plain orjson, per call", ("exact", "orjson"), rows
    )
    sizes = ", ".join(f"{name} {len(dumps_exact(p))} B" for name, p in PAYLOADS.items())
    console.print(f"payloads: {sizes}; best of 7 x {args.number:,} calls", highlight=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
