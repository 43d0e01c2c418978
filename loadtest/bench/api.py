"""A small client of one account's API for the bench's billing phases: every call must answer
200, or the phase stops with what the API said."""

from __future__ import annotations

from typing import Any

import httpx


class BenchApi:
    def __init__(self, base_url: str, key: str) -> None:
        self._client = httpx.AsyncClient(
            base_url=base_url, headers={"Authorization": f"Bearer {key}"}, timeout=10.0
        )

    async def get(self, path: str, params: dict[str, str]) -> dict[str, Any]:
        return self._body(path, await self._client.get(path, params=params))

    async def post(self, path: str, form: dict[str, str]) -> dict[str, Any]:
        return self._body(path, await self._client.post(path, data=form))

    @staticmethod
    def _body(path: str, response: httpx.Response) -> dict[str, Any]:
        if response.status_code != 200:
            raise RuntimeError(f"{path}: {response.status_code} {response.text}")
        body: dict[str, Any] = response.json()
        return body

    async def close(self) -> None:
        await self._client.aclose()
