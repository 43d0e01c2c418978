"""Telling a database outage from a bug, by exception type only (never by message text).

PostgreSQL going away (a restart, a stop, a failover, a cut connection) reaches asyncpg code
as one of many exceptions, depending on the moment it hits:

- no server to connect to: ``ConnectionRefusedError`` and other :class:`OSError`, or a
  :class:`TimeoutError` (an :class:`OSError` too) from a pool that cannot connect in time;
- a server starting, stopping or full: ``CannotConnectNowError``, ``AdminShutdownError``,
  ``CrashShutdownError`` (SQLSTATE 57P01-57P03), ``TooManyConnectionsError`` (53300);
- a connection lost mid-query: ``ConnectionDoesNotExistError`` and the rest of SQLSTATE class 08
  (``PostgresConnectionError``), or an :class:`~asyncpg.InterfaceError` ("connection is closed")
  or an :class:`~asyncpg.InternalClientError` from a protocol cut off mid-message;
- a server out of disk for its tables and indexes: ``DiskFullError`` (53100). Reads still work,
  but every write that needs a new block fails until space is freed, and then the server carries
  on by itself: for a writer, an outage to wait out, not a bug. (Out of disk for its WAL, the
  server PANICs instead, and its clients see one of the errors above.)
- a server out of memory: ``OutOfMemoryError`` (53200), a backend that could not allocate. Like
  a full disk it passes when the pressure does (other backends finish, the operator adds memory)
  and the same statement then succeeds, so it is waited out too. Other resource errors of class
  53 (``ConfigurationLimitExceededError``, 53400: a limit in the server's settings) stay bugs.

Ingest answers these 503 with ``Retry-After``; the aggregator's and the alert evaluator's loops
wait them out with backoff (:mod:`meterflow.lifecycle.reconnect`).
"""

from __future__ import annotations

import asyncpg
from asyncpg.exceptions import ClientConfigurationError, UnsupportedClientFeatureError

# Everything the driver raises on a failed round trip: what a loop rolls back and retries.
DATABASE_ERRORS = (
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
    asyncpg.InternalClientError,
    OSError,
)

_UNREACHABLE: tuple[type[Exception], ...] = (
    OSError,
    asyncpg.PostgresConnectionError,
    asyncpg.AdminShutdownError,
    asyncpg.CrashShutdownError,
    asyncpg.CannotConnectNowError,
    asyncpg.TooManyConnectionsError,
    asyncpg.exceptions.DiskFullError,
    asyncpg.exceptions.OutOfMemoryError,
    asyncpg.InterfaceError,
    asyncpg.InternalClientError,
)
# Interface errors that come from our settings or code, not from the server's absence.
_NOT_OUTAGES: tuple[type[Exception], ...] = (
    ClientConfigurationError,
    UnsupportedClientFeatureError,
)


def is_database_outage(exc: BaseException) -> bool:
    """Whether ``exc`` means PostgreSQL could not be reached, dropped the connection, or could
    not go on because its disk is full or it ran out of memory.

    A group of errors (from a task group) is an outage when every error in it is one.
    """
    if isinstance(exc, BaseExceptionGroup):
        return all(is_database_outage(inner) for inner in exc.exceptions)
    return isinstance(exc, _UNREACHABLE) and not isinstance(exc, _NOT_OUTAGES)
