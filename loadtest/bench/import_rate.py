"""Bulk import rate: ``meterflow import`` of a CSV file on the local disk, as an operator runs it.

The file (raw ``sum`` meter, a thousand customers, an identifier on every other line, timestamps
over the last day) is written before the clock starts. The importer runs as its own process
against the bench stack; its own figure (lines checked, published and acknowledged by Kafka, per
second of the import) is reported, and the wall-clock rate of the whole command beside it
(interpreter start-up and the digest that names the import included).
"""

from __future__ import annotations

import asyncio
import re
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from loadtest.bench.stack import BenchStack
from loadtest.plan import new_run_id
from loadtest.provision import create_accounts, provision

CUSTOMERS = 1000
HEADER = "event_name,timestamp,identifier,payload.stripe_customer_id,payload.value\n"
_REPORTED = re.compile(
    r"([\d,]+) events published, ([\d,]+) rejected.* in ([\d.]+) s \(([\d,]+) events/s\)"
)


def write_file(path: Path, event_name: str, lines: int, now_s: int) -> None:
    with path.open("w") as out:
        out.write(HEADER)
        for n in range(lines):
            identifier = f"bench-{n}" if n % 2 else ""
            out.write(
                f"{event_name},{now_s - n % 86_400},{identifier},cus_{n % CUSTOMERS},{n % 97}\n"
            )


async def measure_import(stack: BenchStack, lines: int) -> dict[str, Any]:
    run_id = new_run_id()
    (account,) = await create_accounts(stack.database_url, 1, run_id)
    setup = await provision(stack.base_url, [account.secret_key], [("sum", None)], 1, run_id)
    event_name = setup.accounts[0].meters[0].event_name
    with tempfile.TemporaryDirectory(prefix="meterflow-import-bench-") as scratch:
        source = Path(scratch) / "events.csv"
        write_file(source, event_name, lines, int(time.time()))
        size = source.stat().st_size
        started = time.perf_counter()
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "deploy.cli", "import", str(source),
            "--account", account.account_id,
            env=stack.env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        out, err = await proc.communicate()
        wall_s = time.perf_counter() - started
    found = _REPORTED.search(out.decode())
    if proc.returncode != 0 or found is None:
        raise RuntimeError(f"meterflow import failed: {err.decode()[-500:]}")
    published, rejected, import_s, rate = (found.group(i).replace(",", "") for i in range(1, 5))
    return {
        "lines": lines,
        "file_mib": round(size / 2**20, 1),
        "published": int(published),
        "rejected": int(rejected),
        "import_s": float(import_s),
        "events_per_s": float(rate),
        "wall_s": round(wall_s, 2),
        "wall_events_per_s": round(int(published) / wall_s, 1),
    }
