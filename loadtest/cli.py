"""The ``python -m loadtest`` command line."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

import orjson
import uvloop

from loadtest.generator import probe_stream, run_load
from loadtest.noop_server import running_noop_server
from loadtest.plan import Bounds, LoadConfig, MeterCounts, TrafficMix, meter_shapes, new_run_id
from loadtest.provision import create_accounts, noop_setup, provision
from loadtest.report import format_load_report
from loadtest.stream_sessions import StreamUnavailable
from loadtest.verify import verify_run
from meterflow.errors import MeterflowError
from meterflow.settings import load_settings

EXIT_PROBLEMS = 1
EXIT_USAGE = 2
EXIT_STREAM_UNAVAILABLE = 3


def build_parser() -> argparse.ArgumentParser:
    settings = load_settings()
    p = argparse.ArgumentParser(
        prog="python -m loadtest",
        description="Drive meterflow's meter event API with realistic traffic, then check that "
        "the event summaries show exactly what was acknowledged.",
    )
    p.add_argument(
        "--target",
        choices=("api", "noop"),
        default="api",
        help="noop: measure the generator itself against a local no-op server",
    )
    p.add_argument("--url", default=f"http://{settings.http_host}:{settings.ingest.http_port}")
    p.add_argument(
        "--database-url",
        default=settings.database_url,
        help="to create the run's accounts (default: DATABASE_URL)",
    )
    p.add_argument(
        "--key",
        action="append",
        default=[],
        help="use this account's secret key instead of creating accounts (repeatable)",
    )
    p.add_argument("--mode", choices=("v2", "v1", "stream"), default="v2")
    p.add_argument("--rate", type=float, help="events per second (default: as fast as possible)")
    p.add_argument("--duration", type=float, help="seconds to run")
    p.add_argument("--count", type=int, help="events to send")
    p.add_argument("--accounts", type=int, default=2)
    p.add_argument("--raw-meters", type=int, default=2, help="meters per account without window")
    p.add_argument(
        "--windowed-meters",
        type=int,
        default=2,
        help="pre-aggregated meters per account (event_time_window hour or day)",
    )
    p.add_argument("--customers", type=int, default=200)
    p.add_argument("--duplicate-ratio", type=float, default=0.02)
    p.add_argument("--invalid-ratio", type=float, default=0.02)
    p.add_argument("--late-ratio", type=float, default=0.05)
    p.add_argument(
        "--workers",
        type=int,
        help="processes (default 2 at max rate, else 1; 0 runs in this process)",
    )
    p.add_argument("--connections", type=int, default=16, help="per worker")
    p.add_argument("--batch-size", type=int, default=100, help="events per stream request")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--timeout", type=float, default=10.0, help="seconds per request")
    p.add_argument("--no-verify", action="store_true", help="skip the summaries check")
    p.add_argument("--verify-timeout", type=float, default=60.0)
    p.add_argument(
        "--window-sample",
        type=int,
        default=10,
        help="customers also checked per hour and per day window",
    )
    p.add_argument("--json", type=Path, help="write the report here as JSON")
    return p


def config_from(args: argparse.Namespace) -> LoadConfig:
    workers = args.workers
    if workers is None:
        workers = min(2, os.cpu_count() or 1) if args.rate is None else 1
    noop = args.target == "noop"
    mix = (
        TrafficMix()
        if noop
        else TrafficMix(
            duplicate_ratio=args.duplicate_ratio,
            invalid_ratio=args.invalid_ratio,
            late_ratio=args.late_ratio,
        )
    )
    return LoadConfig(
        bounds=Bounds(duration_s=args.duration, count=args.count),
        mode=args.mode,
        rate=args.rate,
        workers=workers,
        connections=args.connections,
        batch_size=args.batch_size,
        mix=mix,
        seed=args.seed,
        request_timeout_s=args.timeout,
        track_totals=not noop,
    )


async def run(args: argparse.Namespace) -> tuple[int, dict[str, Any]]:
    config = config_from(args)
    run_id = new_run_id()
    if args.target == "noop":
        with running_noop_server() as url:
            setup = noop_setup(url, run_id, max(args.customers, config.lanes))
            result = await run_load(config, setup, label="noop")
        print(format_load_report(result.report))
        return 0, {"load": result.report}
    keys = list(args.key)
    if not keys:
        if not args.database_url:
            raise MeterflowError(
                "give --key, or --database-url (or DATABASE_URL) to create accounts"
            )
        accounts = await create_accounts(args.database_url, args.accounts, run_id)
        keys = [account.secret_key for account in accounts]
    try:
        if config.mode == "stream":  # before creating meters the run could not use
            await probe_stream(args.url, keys[0])
        shapes = meter_shapes(MeterCounts(raw=args.raw_meters, windowed=args.windowed_meters))
        setup = await provision(args.url, keys, shapes, args.customers, run_id)
        result = await run_load(config, setup, label=args.mode)
    except StreamUnavailable as exc:
        print(str(exc), file=sys.stderr)
        return EXIT_STREAM_UNAVAILABLE, {
            "load": {"mode": "stream", "available": False, "reason": str(exc)}
        }
    print(format_load_report(result.report))
    document: dict[str, Any] = {"load": result.report}
    code = EXIT_PROBLEMS if result.report["problems"] else 0
    if not args.no_verify and result.expected is not None:
        verification = await verify_run(
            setup,
            result.expected,
            unresolved=result.unresolved,
            timeout_s=args.verify_timeout,
            window_sample=args.window_sample,
        )
        print(verification.text())
        document["verification"] = verification.as_dict()
        code = code or (0 if verification.ok else EXIT_PROBLEMS)
    return code, document


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        code, document = uvloop.run(run(args))
    except (MeterflowError, ValueError) as exc:
        print(f"loadtest: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130
    if args.json is not None:
        args.json.write_bytes(orjson.dumps(document, option=orjson.OPT_INDENT_2))
    return code
