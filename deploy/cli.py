"""The ``meterflow`` command: one entry point, a subcommand per component and operation.

It stands above every package (the processes, the launchers, the core) and nothing imports it.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

import asyncpg

from aggregator.alerts.process import run_alerts
from aggregator.maintenance.retention import run_maintenance
from aggregator.process import run_aggregator
from deploy.stack import run_stack
from ingest.server import run_ingest
from meterflow.errors import ConfigurationError, MeterflowError
from meterflow.kafka.topics import ensure_topics, topic_specs
from meterflow.logs import configure_logging
from meterflow.runtime import lower_priority, tune_garbage_collector
from meterflow.settings import LOG_FORMATS, Settings, environment_variables, load_settings
from meterflow.settings.local_stack import read_local_stack, with_local_stack
from meterflow.store.accounts import create_account, create_key, revoke_key
from meterflow.store.migrations import migrate

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
    return parser


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
