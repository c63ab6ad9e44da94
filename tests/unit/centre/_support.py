"""A configuration store in memory beside the real one (``PgConfigStore``), and an app."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web

from siaga_pbx import conference, config, core
from siaga_pbx.adapters.http import make_app
from siaga_pbx.adapters.metrics import Metrics
from siaga_pbx.centre import (
    CentreKeeper,
    CentreRecord,
    LocalCopy,
    StoreUnavailable,
    add_centre_routes,
    seed_of,
)
from siaga_pbx.centre._record import Edit

TOKENS = {"t-admin": "admin", "t-sup": "supervisor", "t-ops": "ops", "t-taker": "taker"}
ADMIN = {"Authorization": "Bearer t-admin"}


@dataclass
class MemoryStore:
    """Holds one record; ``down`` makes it answer like an unreachable PostgreSQL."""

    seed: CentreRecord
    record: CentreRecord | None = None
    down: bool = False
    edits: int = 0

    async def load(self) -> CentreRecord:
        if self.down:
            raise StoreUnavailable("PostgreSQL unreachable: connection refused")
        if self.record is None:
            self.record = self.seed
        return self.record

    async def edit(self, edit: Edit) -> tuple[CentreRecord, CentreRecord]:
        before = await self.load()
        after = edit(before).check()
        self.record = after
        self.edits += 1
        return before, after


def lab_settings(**overrides: Any) -> config.Settings:
    return config.load(**overrides)


@dataclass
class Centre:
    """The API over a real distribution core and conference core; what the
    API submits is kept in ``submitted`` and applied by ``apply``."""

    keeper: CentreKeeper
    store: MemoryStore
    distributor: core.Distributor
    conferences: conference.Conferences
    app: web.Application
    submitted: list[core.Event | conference.Event] = field(default_factory=list)

    def apply(self, now: float = 1000.0) -> None:
        """What the consumer does with the inbox: feed each event to its core."""
        for item in self.submitted:
            if isinstance(item, conference.DirectoryChanged):
                self.conferences.handle(item, now)
            else:
                self.distributor.handle(item, now)  # type: ignore[arg-type]
        self.submitted.clear()


async def make_centre(
    state_dir: Path, settings: config.Settings | None = None, *, down: bool = False
) -> Centre:
    seed = seed_of(settings or lab_settings())
    store = MemoryStore(seed, down=down)
    keeper = CentreKeeper(store, LocalCopy(state_dir), seed)
    record = await keeper.start()
    distributor = core.Distributor(record.centre())
    conferences = conference.Conferences(record.directory())
    submitted: list[core.Event | conference.Event] = []
    app = make_app(
        distributor=distributor,
        submit=submitted.append,
        metrics_=Metrics(),
        tokens=TOKENS,
        health=dict,
    )
    keeper.attach(submitted.append)
    add_centre_routes(app, keeper)
    return Centre(keeper, store, distributor, conferences, app, submitted)
