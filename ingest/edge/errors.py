"""Errors answered to API clients: each knows its HTTP status and Stripe's error ``type`` and
``code``, and renders Stripe's error body."""

from __future__ import annotations

from typing import Any, ClassVar

import asyncpg

from meterflow.errors import MeterflowError


class ApiError(MeterflowError):
    """An error answered to an API client in Stripe's error shape."""

    status: ClassVar[int] = 400
    error_type: ClassVar[str] = "invalid_request_error"
    # The code a v2 endpoint answers instead of ``code``, where Stripe's v2 names it differently.
    v2_code: ClassVar[str | None] = None

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        param: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.param = param
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        error: dict[str, Any] = {"type": self.error_type, "message": self.message}
        if self.code is not None:
            error["code"] = self.code
        if self.param is not None:
            error["param"] = self.param
        return {"error": error}


class InvalidRequest(ApiError):
    """400: the request is malformed or breaks a documented rule."""


class AuthenticationFailed(ApiError):
    """401: no key, or a key meterflow does not know."""

    status = 401


class SessionExpired(AuthenticationFailed):
    """401: a meter event session token past its ``expires_at`` (or revoked)."""

    error_type = "temporary_session_expired"

    def __init__(self, message: str = "The temporary session token has expired.") -> None:
        super().__init__(message, code="billing_meter_event_session_expired")


class ResourceMissing(ApiError):
    """404: no such object in the caller's account and mode (v2: ``not_found``)."""

    status = 404
    v2_code = "not_found"

    def __init__(self, message: str, *, param: str | None = "id") -> None:
        super().__init__(message, code="resource_missing", param=param)


class UnknownRoute(ApiError):
    """404: the path is not part of the API."""

    status = 404


class RequestTimeout(ApiError):
    """408: the request head or body did not arrive in time (answered by the HTTP edge)."""

    status = 408


class PayloadTooLarge(ApiError):
    """413: the body is larger than the configured limit."""

    status = 413


class RequestLineTooLong(ApiError):
    """414: the request line (method, URL, version) is longer than the configured limit."""

    status = 414


class HeadersTooLarge(ApiError):
    """431: the request headers are larger, or more numerous, than the configured limits."""

    status = 431


class UnsupportedMediaType(ApiError):
    """415: the body is neither form-encoded nor JSON."""

    status = 415


class Conflict(ApiError):
    """409: the request conflicts with the current state of an object."""

    status = 409


class RateLimited(ApiError):
    """429: the account sent more than its share."""

    status = 429
    error_type = "rate_limit_error"
    retriable = True


class ServiceUnavailable(ApiError):
    """503: a dependency (Kafka, PostgreSQL) cannot take the request in time."""

    status = 503
    error_type = "api_error"
    retriable = True


class DatabaseUnavailable(ServiceUnavailable):
    """503 with ``Retry-After``: PostgreSQL cannot be reached (stopped, restarting, or the
    connection was lost); see :func:`~meterflow.store.outages.is_database_outage`."""

    retry_after_s: ClassVar[int] = 1

    def __init__(
        self,
        message: str = (
            "meterflow cannot reach its database right now. Retry after the number of seconds "
            "in the Retry-After header; a retry with the same Idempotency-Key or meter event "
            "identifier is safe."
        ),
    ) -> None:
        super().__init__(message, headers={"Retry-After": str(self.retry_after_s)})

    @classmethod
    def for_outage(cls, exc: BaseException) -> DatabaseUnavailable:
        """The 503 for the outage ``exc``: a full disk is told apart from an unreachable server."""
        if isinstance(exc, asyncpg.exceptions.DiskFullError):
            return cls(
                "meterflow's database cannot store anything right now: its disk is full. Retry "
                "after the number of seconds in the Retry-After header; a retry with the same "
                "Idempotency-Key or meter event identifier is safe."
            )
        return cls()
