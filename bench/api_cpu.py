"""CPU per audited query in the API, with and without its framework-free path, and in
the library, measured in one process on one benchmark ledger.

    python bench/api_cpu.py --home COPY [--rounds 8] [--runs 500]

COPY is a copy of a benchmark ledger (`episteme bench generate`), or a PostgreSQL URL
of one: every query is an audited write. Two apps are built over one open ledger, one
with `fast_query` (the default) and one without; each round sends `runs` `POST /v1/query`
calls to each app as ASGI calls (no sockets, no server: what is left is what the app
costs), then makes as many `Ledger.query` calls, all on random subjects, and records the
process's CPU time per query. Prints the median over rounds of each, and each round's
figures.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import time
from typing import Any

import orjson

from common import script  # beside this file
from episteme.api import Settings, create_app
from episteme.benchmark.asgi import post
from episteme.ledger import Ledger

AGENT = "bench.api-cpu"


async def _measure(home: str, rounds: int, runs: int) -> dict[str, Any]:
    ledger = Ledger.open(home)
    secret, _ = ledger.issue_token(AGENT, ["agent"], by="bench")
    subjects = [
        r[0]
        for r in ledger.store.conn.execute(
            "SELECT DISTINCT subject FROM assertions ORDER BY subject LIMIT 2000"
        )
    ]
    apps = {
        f"api, {name}": create_app(
            Settings(mcp=False, background=False, fast_query=fast), ledger=ledger
        )
        for name, fast in (("framework", False), ("fast path", True))
    }
    headers = [
        (b"host", b"bench"),
        (b"authorization", f"Bearer {secret}".encode()),
        (b"content-type", b"application/json"),
    ]
    rng = random.Random(1)
    cpu: dict[str, list[float]] = {name: [] for name in [*apps, "library"]}
    for n in range(rounds + 1):  # the first round warms up, uncounted
        for name in cpu:
            picked = [rng.choice(subjects) for _ in range(runs)]
            start = time.process_time()
            for subject in picked:
                if name == "library":
                    ledger.query(subject, agent=AGENT, lens="approved")
                else:
                    body = orjson.dumps({"subject": subject, "lens": "approved"})
                    length = (b"content-length", str(len(body)).encode())
                    status, _ = await post(apps[name], "/v1/query", [*headers, length], [body])
                    if status != 200:
                        raise SystemExit(f"POST /v1/query answered {status}")
            if n:
                cpu[name].append((time.process_time() - start) / runs * 1e3)
    ledger.close()
    return {
        "runs": runs,
        "rounds": rounds,
        "cpu_ms_per_query": {k: round(statistics.median(v), 3) for k, v in cpu.items()},
        "rounds_ms": {k: [round(x, 3) for x in v] for k, v in cpu.items()},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--home", required=True, help="a ledger's directory or URL")
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--runs", type=int, default=500)
    args = parser.parse_args()
    print(json.dumps(asyncio.run(_measure(args.home, args.rounds, args.runs))))


if __name__ == "__main__":
    script(main)
