"""The ``meterflow`` command: one entry point, a subcommand per component and operation.

It stands above every package (the processes, the launchers, the core) and nothing imports it.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import asyncpg
import orjson

from aggregator.alerts.process import run_alerts
from aggregator.error_reports.consumer import error_report_group
from aggregator.maintenance.retention import run_maintenance
from aggregator.process import run_aggregator
from aggregator.replay.rebuild import RebuildRequest, rebuild
from aggregator.replay.report import as_documents as difference_documents
from aggregator.replay.report import summary as rebuild_summary
from deploy.stack import run_stack
from ingest.server import run_ingest
from meterflow.errors import ConfigurationError, MeterflowError
from meterflow.imports.run import Importer, ImportRequest
from meterflow.kafka.groups import GroupPositions, describe_groups, stored_positions
from meterflow.kafka.positions import offsets_at, reading_consumer
from meterflow.kafka.resets import (
    ResetPolicy,
    ResetRefused,
    apply_reset,
    check_reset,
    plan_reset,
)
from meterflow.kafka.topics import ensure_topics, topic_specs
from meterflow.logs import configure_logging
from meterflow.replay.redrive import Redrive
from meterflow.replay.rejections import RedriveCounts, RedriveFilter
from meterflow.runtime import lower_priority, tune_garbage_collector
from meterflow.settings import LOG_FORMATS, Settings, environment_variables, load_settings
from meterflow.settings.local_stack import read_local_stack, with_local_stack
from meterflow.store.accounts import create_account, create_key, revoke_key
from meterflow.store.migrations import migrate
from meterflow.windows import DAY_S

T = TypeVar("T")


def _need_database(settings: Settings) -> str:
    if not settings.database_url:
        raise ConfigurationError(
            "DATABASE_URL is not set and no local stack is running: start one with "
            "`meterflow up` (other commands then find it), or set DATABASE_URL"
        )
    return settings.database_url


def _need_kafka(settings: Settings) -> str:
    if not settings.kafka_bootstrap_servers:
        raise ConfigurationError(
            "KAFKA_BOOTSTRAP_SERVERS is not set and no local stack is running: start one with "
            "`meterflow up`, or set KAFKA_BOOTSTRAP_SERVERS"
        )
    return settings.kafka_bootstrap_servers


def cmd_up(settings: Settings, _args: argparse.Namespace) -> int:
    return run_stack(settings)


def cmd_ingest(settings: Settings, _args: argparse.Namespace) -> int:
    _need_database(settings)
    tune_garbage_collector()
    run_ingest(settings)
    return 0


def cmd_aggregator(settings: Settings, _args: argparse.Namespace) -> int:
    tune_garbage_collector()
    lower_priority(settings.consumers.consumer_nice)
    run_aggregator(settings)
    return 0


def cmd_alerts(settings: Settings, _args: argparse.Namespace) -> int:
    _need_database(settings)
    _need_kafka(settings)
    tune_garbage_collector()
    lower_priority(settings.consumers.consumer_nice)
    run_alerts(settings)
    return 0


def cmd_migrate(settings: Settings, _args: argparse.Namespace) -> int:
    applied = asyncio.run(migrate(_need_database(settings)))
    print(f"applied {len(applied)} migration(s)" + (f": {', '.join(applied)}" if applied else ""))
    return 0


def cmd_topics(settings: Settings, _args: argparse.Namespace) -> int:
    specs = topic_specs(settings.topic_prefix)
    bootstrap = _need_kafka(settings)
    created = asyncio.run(ensure_topics(bootstrap, specs, security=settings.kafka))
    print(f"{len(specs)} topic(s) present; created: {', '.join(created) or 'none'}")
    return 0


async def _with_connection(
    settings: Settings, work: Callable[[asyncpg.Connection], Coroutine[Any, Any, T]]
) -> T:
    conn = await asyncpg.connect(_need_database(settings))
    try:
        return await work(conn)
    finally:
        await conn.close()


def cmd_accounts_create(settings: Settings, args: argparse.Namespace) -> int:
    account = asyncio.run(
        _with_connection(settings, lambda c: create_account(c, args.name, livemode=args.live))
    )
    print(f"account: {account.account_id}")
    print(f"secret key: {account.secret_key}")
    return 0


def cmd_keys_create(settings: Settings, args: argparse.Namespace) -> int:
    key = asyncio.run(
        _with_connection(settings, lambda c: create_key(c, args.account, livemode=args.live))
    )
    print(key)
    return 0


def cmd_keys_revoke(settings: Settings, args: argparse.Namespace) -> int:
    revoked = asyncio.run(_with_connection(settings, lambda c: revoke_key(c, args.key)))
    print("revoked" if revoked else "no such active key")
    return 0 if revoked else 1


def cmd_maintenance(settings: Settings, _args: argparse.Namespace) -> int:
    now_ms = int(time.time() * 1000)
    retention_days = settings.aggregator.event_retention_days
    report = asyncio.run(
        _with_connection(
            settings, lambda c: run_maintenance(c, now_ms=now_ms, retention_days=retention_days)
        )
    )
    if report is None:
        print("another process is running maintenance; nothing done")
    else:
        print(report.summary())
    return 0


def cmd_config(settings: Settings, _args: argparse.Namespace) -> int:
    masked = settings.masked()
    for variable, field_name in environment_variables().items():
        print(f"{variable}={masked[field_name]}")
    return 0


# -- replaying topics, imports and consumer positions ------------------------------------------


def _progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _time_arg(text: str | None) -> int | None:
    """Unix seconds, a date (``2026-12-01``, UTC midnight) or an ISO 8601 time (UTC unless it
    says otherwise)."""
    if text is None:
        return None
    if text.isdigit():
        return int(text)
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError as exc:
        raise ConfigurationError(
            f"{text!r} is neither unix seconds, a date (2026-12-01) nor an ISO 8601 time"
        ) from exc
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp())


def cmd_replay_rebuild(settings: Settings, args: argparse.Namespace) -> int:
    _need_database(settings)
    _need_kafka(settings)
    last_day = _time_arg(args.to)
    request = RebuildRequest(
        account_id=args.account,
        meter_ids=tuple(args.meter or ()),
        start_s=_time_arg(args.start),
        end_s=None if last_day is None else last_day + DAY_S,
        apply=args.apply,
    )
    report = asyncio.run(rebuild(settings, request, _progress))
    for line in rebuild_summary(report, limit=args.show):
        print(line)
    if args.report is not None:
        with Path(args.report).open("wb") as out:
            out.writelines(
                orjson.dumps(d) + b"\n" for d in difference_documents(report.differences)
            )
    return 1 if report.differences and not args.apply else 0


def cmd_replay_rejected(settings: Settings, args: argparse.Namespace) -> int:
    database_url, bootstrap = _need_database(settings), _need_kafka(settings)
    since, until = _time_arg(args.since), _time_arg(args.until)
    selection = RedriveFilter(
        account_id=args.account,
        livemode=args.livemode,
        codes=frozenset(args.code or ()),
        meter_ids=frozenset(args.meter or ()),
        event_names=frozenset(args.event_name or ()),
        rejected_from_ms=None if since is None else since * 1000,
        rejected_until_ms=None if until is None else until * 1000,
    )
    started = time.monotonic()

    async def redrive() -> RedriveCounts:
        conn = await asyncpg.connect(database_url)
        shown = time.monotonic()

        async def progress(counts: RedriveCounts) -> None:
            nonlocal shown
            if time.monotonic() - shown >= 2.0:
                shown = time.monotonic()
                _progress(
                    f"replay rejected: read {counts.records_read:,} of "
                    f"{counts.records_total:,} records, {counts.matched:,} rejections matched"
                )

        try:
            redrive = Redrive(
                conn, bootstrap, settings.topic_prefix, selection, security=settings.kafka
            )
            return await redrive.run(progress)
        finally:
            await conn.close()

    counts = asyncio.run(redrive())
    seconds = time.monotonic() - started
    outcomes = ", ".join(f"{name} {n:,}" for name, n in counts.outcome_counts().items())
    print(
        f"replay rejected: read {counts.records_read:,} records, {counts.matched:,} rejections "
        f"matched in {seconds:.1f} s ({counts.matched / seconds:,.0f}/s): {outcomes}"
    )
    if counts.rejected_codes:
        codes = ", ".join(f"{code} {n:,}" for code, n in sorted(counts.rejected_codes.items()))
        print(f"  rejected again (back on the rejected-events topic): {codes}")
    if counts.too_old:
        print(
            f"  now more than 35 days old, not counted (back on the rejected-events topic): "
            f"{', '.join(counts.too_old)}"
        )
    return 0


def cmd_import(settings: Settings, args: argparse.Namespace) -> int:
    _need_database(settings)
    _need_kafka(settings)
    request = ImportRequest(
        source=args.file,
        account_id=args.account,
        livemode=args.live,
        file_format=args.format,
        reject_path=None if args.reject_file is None else Path(args.reject_file),
        import_id=args.import_id,
    )
    report = asyncio.run(Importer(settings, request, _progress).run())
    if report.already_finished:
        print(
            f"import {report.import_id}: already finished ({report.total_accepted:,} events "
            f"published, {report.total_rejected:,} lines rejected); nothing to do"
        )
        return 0
    codes = ", ".join(f"{code} {n:,}" for code, n in report.codes.most_common())
    resumed = f", resumed after line {report.resumed_at_line:,}" if report.resumed_at_line else ""
    print(
        f"import {report.import_id}: {report.lines:,} lines{resumed}: {report.accepted:,} "
        f"events published, {report.rejected:,} rejected{f' ({codes})' if codes else ''} in "
        f"{report.seconds:.1f} s ({report.events_per_s:,.0f} events/s)"
    )
    print(
        f"  in all: {report.total_accepted:,} published, {report.total_rejected:,} rejected; "
        f"rejects in {report.reject_path}"
    )
    return 0


def _reset_policies(settings: Settings) -> dict[str, ResetPolicy]:
    rollups = settings.aggregator.consumer_group
    reports = error_report_group(settings)
    alerts = settings.alerts.alerts_consumer_group
    return {
        rollups: ResetPolicy(rollups, max_age_s=24 * 3600),
        alerts: ResetPolicy(alerts, max_age_s=None),
        reports: ResetPolicy(
            reports,
            max_age_s=None,
            refused="it adds rejections up into error reports, so reading them again would "
            "report them again",
        ),
    }


def cmd_consumers(settings: Settings, args: argparse.Namespace) -> int:
    database_url, bootstrap = _need_database(settings), _need_kafka(settings)

    async def describe() -> list[GroupPositions]:
        conn = await asyncpg.connect(database_url)
        consumer = reading_consumer(bootstrap, settings.kafka)
        await consumer.start()
        try:
            return await describe_groups(conn, consumer, bootstrap, settings.kafka)
        finally:
            await consumer.stop()
            await conn.close()

    groups = asyncio.run(describe())
    if args.json:
        print(orjson.dumps([g.as_document() for g in groups], option=orjson.OPT_INDENT_2).decode())
        return 0
    for g in groups:
        print(f"{g.group}  {g.topic}  {g.state}, {g.members} member(s), lag {g.lag:,}")
        print(f"  {'partition':>9}  {'stored':>12}  {'end':>12}  {'lag':>10}  owner")
        for p in g.partitions:
            stored = "-" if p.stored is None else f"{p.stored:,}"
            print(f"  {p.partition:>9}  {stored:>12}  {p.end:>12,}  {p.lag:>10,}  {p.owner or '-'}")
    if not groups:
        print("no consumer group has stored offsets yet")
    return 0


def cmd_consumers_reset(settings: Settings, args: argparse.Namespace) -> int:
    database_url, bootstrap = _need_database(settings), _need_kafka(settings)
    to_s = _time_arg(args.to_time)
    assert to_s is not None  # noqa: S101 - a required argument
    policy = _reset_policies(settings).get(
        args.group,
        ResetPolicy(args.group, None, refused="meterflow does not know that re-reading its "
                    "records is harmless"),
    )  # fmt: skip
    check_reset(policy, to_s * 1000, int(time.time() * 1000))

    async def reset() -> tuple[str, dict[int, tuple[int, int]]]:
        conn = await asyncpg.connect(database_url)
        consumer = reading_consumer(bootstrap, settings.kafka)
        await consumer.start()
        try:
            topics = [t for g, t in await stored_positions(conn) if g == args.group]
            if args.topic is not None:
                topics = [t for t in topics if t == args.topic]
            if len(topics) != 1:
                raise ResetRefused(
                    f"group {args.group} has stored offsets for {len(topics)} topic(s) "
                    f"{topics}; name one with --topic"
                )
            at_time = await offsets_at(consumer, topics[0], to_s * 1000)
            if args.dry_run:
                stored = (await stored_positions(conn))[(args.group, topics[0])]
                planned = plan_reset(stored, at_time)
                return topics[0], {p: (stored[p], to) for p, to in planned.items()}
            return topics[0], await apply_reset(conn, args.group, topics[0], at_time)
        finally:
            await consumer.stop()
            await conn.close()

    topic, moves = asyncio.run(reset())
    verb = "would move" if args.dry_run else "moved"
    again = sum(before - after for before, after in moves.values())
    print(
        f"group {args.group} on {topic}: {verb} {len(moves)} partition(s) back; "
        f"{again:,} records to read again"
    )
    for partition, (before, after) in sorted(moves.items()):
        print(f"  partition {partition}: {before:,} -> {after:,}")
    return 0


Command = Callable[[Settings, argparse.Namespace], int]


_LOG_FORMAT_HELP = "text (the default) or json, one object per line; or METERFLOW_LOG_FORMAT"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="meterflow", description="Self-hosted, Stripe-compatible meter event pipeline."
    )
    parser.add_argument("--log-format", choices=LOG_FORMATS, help=_LOG_FORMAT_HELP)
    # The same option after the command (`meterflow ingest --log-format json`); left unset
    # there, it keeps what came before the command.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--log-format", choices=LOG_FORMATS, default=argparse.SUPPRESS, help=_LOG_FORMAT_HELP
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name: str, command: Command, help_text: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_text, description=help_text, parents=[common])
        p.set_defaults(run=command)
        return p

    add("up", cmd_up, "Run the whole stack locally (starts Kafka and PostgreSQL if not given).")
    add("ingest", cmd_ingest, "Run the HTTP API service.")
    add("aggregator", cmd_aggregator, "Run the consumer that folds meter events into rollups.")
    add("alerts", cmd_alerts, "Run the alert evaluator that fires billing alerts on usage.")
    add("migrate", cmd_migrate, "Apply pending database migrations from sql/.")
    add("topics", cmd_topics, "Create the Kafka topics meterflow uses, if missing.")
    add("config", cmd_config, "Print the effective configuration (secrets masked).")
    add("maintenance", cmd_maintenance, "Run one retention pass: prune old rows and partitions.")

    accounts = sub.add_parser("accounts", help="Manage accounts and API keys.", parents=[common])
    accounts_sub = accounts.add_subparsers(dest="accounts_command", required=True)
    create = accounts_sub.add_parser(
        "create", help="Create an account and print a secret key.", parents=[common]
    )
    create.add_argument("--name", default="default", help="a label for the account")
    create.add_argument("--live", action="store_true", help="issue an sk_live_ key")
    create.set_defaults(run=cmd_accounts_create)

    keys = accounts_sub.add_parser("keys", help="Issue or revoke secret keys.", parents=[common])
    keys_sub = keys.add_subparsers(dest="keys_command", required=True)
    key_create = keys_sub.add_parser(
        "create", help="Issue a new secret key for an account.", parents=[common]
    )
    key_create.add_argument("account", help="account id (acct_...)")
    key_create.add_argument("--live", action="store_true", help="issue an sk_live_ key")
    key_create.set_defaults(run=cmd_keys_create)
    key_revoke = keys_sub.add_parser("revoke", help="Revoke a secret key.", parents=[common])
    key_revoke.add_argument("key", help="the secret key to revoke")
    key_revoke.set_defaults(run=cmd_keys_revoke)

    _add_replay_commands(sub, common)
    return parser


def _add_replay_commands(
    sub: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser
) -> None:
    """The commands over topics and positions: replay rebuild and rejected, import, consumers."""
    replay = sub.add_parser(
        "replay", help="Rebuild rollups from Kafka, or re-drive rejected events.", parents=[common]
    )
    replay_sub = replay.add_subparsers(dest="replay_command", required=True)
    rebuild_p = replay_sub.add_parser(
        "rebuild",
        help="Recompute an account's rollups from the meter-events topic and compare or swap.",
        parents=[common],
    )
    rebuild_p.add_argument("--account", required=True, help="account id (acct_...)")
    rebuild_p.add_argument("--meter", action="append", help="a meter id (repeatable; default all)")
    rebuild_p.add_argument("--from", dest="start", help="first UTC day (default: oldest held)")
    rebuild_p.add_argument("--to", help="last UTC day, included (default: tomorrow)")
    mode = rebuild_p.add_mutually_exclusive_group()
    mode.add_argument("--dry-run", action="store_true", help="only report (the default)")
    mode.add_argument("--apply", action="store_true", help="swap the rebuilt rows in")
    rebuild_p.add_argument("--report", help="write every difference to this file (JSON Lines)")
    rebuild_p.add_argument("--show", type=int, default=20, help="differences to print")
    rebuild_p.set_defaults(run=cmd_replay_rebuild)
    rejected = replay_sub.add_parser(
        "rejected",
        help="Re-drive rejected events through validation into the pipeline.",
        parents=[common],
    )
    rejected.add_argument("--account", help="account id (default: every account)")
    rejected_mode = rejected.add_mutually_exclusive_group()
    rejected_mode.add_argument("--live", dest="livemode", action="store_const", const=True)
    rejected_mode.add_argument("--test", dest="livemode", action="store_const", const=False)
    rejected.add_argument("--code", action="append", help="an error code, e.g. no_meter")
    rejected.add_argument("--meter", action="append", help="a meter id")
    rejected.add_argument("--event-name", action="append", help="an event name")
    rejected.add_argument("--since", help="rejected at or after (unix seconds or ISO 8601)")
    rejected.add_argument("--until", help="rejected before (unix seconds or ISO 8601)")
    rejected.set_defaults(run=cmd_replay_rejected)

    importing = sub.add_parser(
        "import", help="Load meter events in bulk from CSV or JSON Lines.", parents=[common]
    )
    importing.add_argument("file", help="the file, or - for standard input")
    importing.add_argument("--account", required=True, help="account id (acct_...)")
    importing.add_argument("--live", action="store_true", help="into live mode")
    importing.add_argument("--format", choices=("csv", "jsonl"), help="default: from the name")
    importing.add_argument("--reject-file", help="default: FILE.rejects.jsonl")
    importing.add_argument("--import-id", help="names the import, to resume it (stdin)")
    importing.set_defaults(run=cmd_import)

    consumers = sub.add_parser(
        "consumers", help="Consumer groups: stored offsets, lag, owners.", parents=[common]
    )
    consumers.add_argument("--json", action="store_true", help="print JSON")
    consumers.set_defaults(run=cmd_consumers)
    consumers_sub = consumers.add_subparsers(dest="consumers_command")
    reset = consumers_sub.add_parser(
        "reset", help="Move a group back to a point in time (harmless re-reads only).",
        parents=[common],
    )  # fmt: skip
    reset.add_argument("group", help="the consumer group")
    reset.add_argument("--to-time", required=True, help="unix seconds or ISO 8601")
    reset.add_argument("--topic", help="needed when the group reads several topics")
    reset.add_argument("--dry-run", action="store_true", help="only show the moves")
    reset.set_defaults(run=cmd_consumers_reset)


def _configure(args: argparse.Namespace) -> Settings:
    """Settings from the environment and the flags; logging set up from them. Every command but
    ``up`` (which starts its own) finds a running local stack for the connections not set."""
    settings = load_settings()
    if args.log_format is not None:
        settings = settings.with_overrides(log_format=args.log_format)
    try:
        configure_logging(settings.log_level, settings.log_format, process=args.command)
    except ValueError as exc:
        raise ConfigurationError(f"METERFLOW_LOG_LEVEL: {exc}") from exc
    if args.command == "up":
        return settings
    return with_local_stack(settings, read_local_stack(settings.launcher.data_dir))


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = _configure(args)
        command: Command = args.run
        return command(settings, args)
    except MeterflowError as exc:
        print(f"meterflow: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
