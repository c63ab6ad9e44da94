"""Small helpers shared by the PostgreSQL tests."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import asyncpg

from siaga_pbx.incidents import Outbox, OutboxRelay


def unique(prefix: str) -> str:
    """An id no other test uses (tests share a module database)."""
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


async def fetch(dsn: str, sql: str, *args: Any) -> list[asyncpg.Record]:
    """Run one query on a short-lived connection."""
    conn = await asyncpg.connect(dsn, timeout=10)
    try:
        return await conn.fetch(sql, *args)
    finally:
        await conn.close()


async def fetchval(dsn: str, sql: str, *args: Any) -> Any:
    """Run one query on a short-lived connection; return the first value."""
    conn = await asyncpg.connect(dsn, timeout=10)
    try:
        return await conn.fetchval(sql, *args)
    finally:
        await conn.close()


async def drain(outbox: Outbox, dsn: str, *, repeat_window_s: float = 600.0) -> int:
    """Apply everything pending in ``outbox`` with a fresh relay; return ops applied."""
    relay = OutboxRelay(outbox, dsn, repeat_window_s=repeat_window_s)
    try:
        return await relay.drain()
    finally:
        await relay.close()


def write_wav(path: Path, seconds: float, rate: int = 8000) -> bytes:
    """Write a mono 16-bit WAV of silence-ish samples; return its bytes."""
    import wave

    frames = int(seconds * rate)
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(bytes((i * 7) % 256 for i in range(frames * 2)))
    return path.read_bytes()
