"""Checks that an HTTP answer is an RFC 9457 problem, shared by the API tests."""

from __future__ import annotations

from typing import Any

from aiohttp import ClientResponse

PROBLEM_KEYS = {"type", "title", "status", "detail", "instance", "request_id"}


async def problem_of(resp: ClientResponse, status: int) -> dict[str, Any]:
    """The problem body of ``resp``, asserting its status, media type and members."""
    assert resp.status == status, await resp.text()
    assert resp.content_type == "application/problem+json", resp.content_type
    body: dict[str, Any] = await resp.json(content_type=None)
    assert set(body) >= PROBLEM_KEYS, body
    assert body["status"] == status, body
    assert body["instance"] == resp.url.path, body
    assert body["request_id"] == resp.headers["X-Request-ID"], body
    assert isinstance(body["detail"], str), body
    assert body["detail"], body
    return body


def fields(body: dict[str, Any]) -> dict[str, str]:
    """``{field path: message}`` of a problem's ``errors`` (empty when it has none)."""
    return {e["field"]: e["message"] for e in body.get("errors", [])}
