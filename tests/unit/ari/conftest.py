"""Fixtures for the ARI client tests: a fake ARI server and a client session."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import pytest

from ._fake_ari import FakeAri


@pytest.fixture
async def fake_ari() -> AsyncIterator[FakeAri]:
    async with FakeAri() as ari:
        yield ari


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s
