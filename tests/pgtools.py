"""PostgreSQL helpers shared by the database and end-to-end tests."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

import asyncpg

T = TypeVar("T")

PG_HOST = os.environ.get("SIAGA_TEST_PG_HOST", "127.0.0.1")
PG_PORT = int(os.environ.get("SIAGA_TEST_PG_PORT", "5432"))
PG_USER = os.environ.get("SIAGA_TEST_PG_USER", "postgres")
START_CLUSTER = ["pg_ctlcluster", "--skip-systemctl-redirect", "15", "main", "start"]


def dsn_for(database: str) -> str:
    """The DSN of ``database`` on the test server."""
    return f"postgresql://{PG_USER}@{PG_HOST}:{PG_PORT}/{database}"


ADMIN_DSN = dsn_for("postgres")


def run_sync(fn: Callable[[], Awaitable[T]]) -> T:
    """Run a coroutine function to completion on a private loop in another thread."""

    async def main() -> T:
        return await fn()

    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, main()).result(timeout=60)


async def reachable() -> bool:
    try:
        conn = await asyncpg.connect(ADMIN_DSN, timeout=3)
    except (OSError, asyncpg.PostgresError, TimeoutError):
        return False
    await conn.close()
    return True


def create_database() -> str:
    """Create an empty database with a random name; return its name."""
    name = f"siaga_test_{uuid.uuid4().hex[:16]}"

    async def create() -> None:
        conn = await asyncpg.connect(ADMIN_DSN, timeout=10)
        try:
            await conn.execute(f'CREATE DATABASE "{name}"')
        finally:
            await conn.close()

    run_sync(create)
    return name


def drop_database(name: str) -> None:
    """Drop a database made by ``create_database`` (closing its connections)."""

    async def drop() -> None:
        conn = await asyncpg.connect(ADMIN_DSN, timeout=10)
        try:
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await conn.close()

    run_sync(drop)
