"""The one owner of the centre's configuration while the service runs.

At start (``start``), before the cores exist: the record from PostgreSQL when
it answers (seeding empty tables from the settings), else the local copy of
the last good record in ``state_dir``, else the settings themselves. The
service never waits on PostgreSQL longer than the store's connect timeout,
and starts and takes calls without it.

While running: every edit (``edit``) goes through the store (one transaction,
versions checked there), then the new record is kept here, saved as the local
copy, and handed to the cores through ``submit`` as ``core.ConfigChanged`` and
``conference.DirectoryChanged`` (only what changed). Edits are serialised
here as well as in the database, so two requests of this instance never
build on the same old record.

If the start was without PostgreSQL, ``run`` keeps trying and, once it
answers, brings the cores to the record there (an admin may have changed it
from another instance meanwhile), then ends.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import structlog

from .. import conference, core
from ._record import CentreRecord, Edit
from ._store import ConfigStore, LocalCopy, StoreUnavailable

log = structlog.get_logger(__name__)

Submit = Callable[[core.Event | conference.Event], None]


class CentreKeeper:
    def __init__(
        self, store: ConfigStore, copy: LocalCopy, seed: CentreRecord, *, retry_s: float = 5.0
    ) -> None:
        self.store = store
        self.copy = copy
        self.record = seed
        self.source = "settings"  # then "database" or "local copy"
        self._submit: Submit | None = None
        self._lock = asyncio.Lock()
        self._retry_s = retry_s
        self._seed = seed

    def attach(self, submit: Submit) -> None:
        """Where changes go from now on: the consumer's inbox."""
        self._submit = submit

    async def start(self) -> CentreRecord:
        try:
            self.record = await self.store.load()
            self.source = "database"
            await self._save_copy(self.record)
        except StoreUnavailable as exc:
            copy = await asyncio.to_thread(self.copy.load, self._seed)
            self.record, self.source = (copy, "local copy") if copy else (self._seed, "settings")
            log.warning("centre.database_unavailable", source=self.source, error=str(exc)[:300])
        log.info(
            "centre.loaded",
            source=self.source,
            queues=list(self.record.queues),
            takers=list(self.record.takers),
            agencies=list(self.record.agencies),
        )
        return self.record

    async def run(self) -> None:
        """Until the record has come from PostgreSQL once; then return."""
        while self.source != "database":
            await asyncio.sleep(self._retry_s)
            async with self._lock:
                try:
                    record = await self.store.load()
                except StoreUnavailable as exc:
                    log.debug("centre.database_still_unavailable", error=str(exc)[:200])
                    continue
                self.source = "database"
                await self._apply(record)
                log.info("centre.reloaded_from_database")

    async def edit(self, edit: Edit) -> tuple[CentreRecord, CentreRecord]:
        """Apply ``edit`` to the record (raises ``StoreUnavailable`` and the
        edit's own ``Stale``/``Conflict``/``NotFound``/``Invalid``)."""
        async with self._lock:
            before, after = await self.store.edit(edit)
            self.source = "database"
            await self._apply(after)
            return before, after

    async def _apply(self, new: CentreRecord) -> None:
        old, self.record = self.record, new
        await self._save_copy(new)
        if self._submit is None:
            return
        centre = new.centre()
        if centre != old.centre():
            self._submit(core.ConfigChanged(centre))
        directory = new.directory()
        if directory != old.directory():
            self._submit(conference.DirectoryChanged(directory))

    async def _save_copy(self, record: CentreRecord) -> None:
        try:
            await asyncio.to_thread(self.copy.save, record)
        except OSError as exc:  # the record is safe in PostgreSQL; only the fallback is stale
            log.error("centre.copy_not_saved", path=str(self.copy.path), error=str(exc))  # noqa: TRY400 - no traceback wanted
