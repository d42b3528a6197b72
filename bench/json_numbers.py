"""Micro-benchmark: ``outbox.json_numbers.loads_exact`` / ``dumps_exact`` beside plain orjson.

Usage: ``.venv/bin/python bench/json_numbers.py [--number N]``.

Every event a projection applies is decoded once (its payload), and every cached value is
encoded and decoded: the exact helpers must cost next to nothing when no integer past 64
bits is there. Measured on a ~300-byte payload as the log returns it (text from
PostgreSQL, bytes from a cache), on the same payload with a 19-digit string (the slow path
taken for nothing) and with an integer past 64 bits (the slow path's reason to be). Figures
are the best of 7 repeats, in nanoseconds per call.
"""

from __future__ import annotations

import argparse
import sys
import timeit
from pathlib import Path
from typing import Any

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

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


def _best(call: Any, number: int) -> float:
    return min(timeit.repeat(call, number=number, repeat=7)) / number * 1e9


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--number", type=int, default=100_000, help="calls per repeat")
    number = parser.parse_args().number
    cases = {
        "typical": TYPICAL,
        "19-digit string": {**TYPICAL, "reference": "1234567890123456789"},
        "integer 2**64": {**TYPICAL, "total_cents": 2**64},
    }
    print(f"{'payload':18} {'bytes':>5} {'call':10} {'orjson ns':>10} {'exact ns':>9} {'ratio':>6}")
    for name, payload in cases.items():
        blob = dumps_exact(payload)
        text = blob.decode()
        rows = [("loads str", lambda t=text: orjson.loads(t), lambda t=text: loads_exact(t))]
        rows.append(("loads bytes", lambda b=blob: orjson.loads(b), lambda b=blob: loads_exact(b)))
        if name != "integer 2**64":  # orjson refuses to write it
            rows.append(
                ("dumps", lambda p=payload: orjson.dumps(p), lambda p=payload: dumps_exact(p))
            )
        for call, plain, exact in rows:
            base, mine = _best(plain, number), _best(exact, number)
            print(f"{name:18} {len(blob):5} {call:10} {base:10.0f} {mine:9.0f} {mine / base:6.2f}")
        if name == "integer 2**64":
            mine = _best(lambda p=payload: dumps_exact(p), number)
            print(f"{name:18} {len(blob):5} {'dumps':10} {'refused':>10} {mine:9.0f}")


if __name__ == "__main__":
    main()
