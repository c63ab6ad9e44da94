"""Assembles the service from its parts and runs it until told to stop.

Tasks, tied together so that any one failing stops the whole (a half-alive
112 service is worse than a restarted one; the dialplan fallback carries calls
while it restarts):
- the ARI event reader (websocket) that fills the service's inbox;
- the consumer (``CallService.run``) that feeds the core;
- the incident journal writer and the outbox relay to PostgreSQL;
- the HTTP server (API, /metrics, /healthz).

Graceful stop (SIGTERM): stop reading new events (Asterisk then fails new
``Stasis()`` calls over to the dialplan fallback), hand waiting callers back
to the dialplan, leave bridged calls running in Asterisk, and flush the
journal into the outbox.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import aiohttp
import structlog
from aiohttp import web

from . import ari, audit, conference, core
from .adapters.conference import AgencyWatcher, add_conference_routes
from .adapters.fallback import FallbackSweeper
from .adapters.handsets import HandsetProvisioner, HandsetSite, handsets_for
from .adapters.http import Submit, make_app
from .adapters.incidents import IncidentJournal
from .adapters.metrics import Metrics
from .adapters.people_api import add_people_routes
from .adapters.telephony import AriTelephony
from .centre import AUDIT as CENTRE_AUDIT
from .centre import CentreKeeper, LocalCopy, PgConfigStore, add_centre_routes, seed_of
from .config import Settings
from .incidents import (
    CallbackRestorer,
    IncidentRecorder,
    IncidentStore,
    Outbox,
    OutboxAuditSink,
    OutboxRelay,
    add_audit_routes,
    add_callback_routes,
    add_incident_routes,
)
from .people import People, SignInEvent
from .service import CallService, Resync, incident_id_for, resynchronise

log = structlog.get_logger(__name__)


class Runtime:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.stopping = asyncio.Event()
        self.session: aiohttp.ClientSession | None = None
        self.stream: ari.EventStream | None = None
        self.service: CallService | None = None
        self.relay: OutboxRelay | None = None
        self.journal: IncidentJournal | None = None
        self.http_port: int | None = None
        # Another instance took the Stasis app over (ApplicationReplaced).
        self.stepped_down = False
        self.fallback: FallbackSweeper | None = None
        self.handsets: HandsetProvisioner | None = None

    async def run(self) -> None:  # noqa: PLR0915 - one assembly, top to bottom
        s = self.settings
        s.state_dir.mkdir(parents=True, exist_ok=True)
        connector = aiohttp.TCPConnector(limit=64)
        async with (
            aiohttp.ClientSession(connector=connector) as session,
            Outbox(s.outbox_path) as outbox,
        ):
            self.session = session
            rest = ari.AriRest(
                session,
                f"{s.ari.url}/ari",
                s.ari.username,
                s.ari.password,
                timeout_s=s.ari.request_timeout_s,
            )
            # The centre's configuration: PostgreSQL, else the local copy, else the settings.
            seed = seed_of(s)
            keeper = CentreKeeper(PgConfigStore(s.database_dsn, seed), LocalCopy(s.state_dir), seed)
            record = await keeper.start()
            self.handsets = HandsetProvisioner(
                rest,
                HandsetSite(
                    s.handsets.transport, s.handsets.media_address, s.handsets.qualify_frequency_s
                ),
            )
            metrics = Metrics()
            recorder = IncidentRecorder(outbox)
            self.journal = IncidentJournal(
                recorder,
                s.recording_dir,
                language=s.prompts.language,
                on_recording_missing=metrics.recording_failures.inc,
            )
            self.relay = OutboxRelay(outbox, s.database_dsn, repeat_window_s=s.repeat_window_s)
            audit_sink = OutboxAuditSink(outbox)  # every action, through the outbox
            service = CallService(
                distributor=core.Distributor(record.centre()),
                conferences=conference.Conferences(record.directory()),
                telephony=AriTelephony(rest, s.ari.app, s.prompts),
                observers=[self.journal, metrics],
                on_command_failed=metrics.command_failed,
                on_feature=lambda taker, action, ok, why: audit_sink.post(
                    audit.handset_feature(taker, action, ok, why)
                ),
                on_core_handled=metrics.core_handled,
                resync=lambda svc: resynchronise(svc, rest, s.ari.app),
            )
            self.service = service
            self.fallback = self._fallback_sweeper(rest, recorder)
            ws_base = s.ari.url.replace("http", "ws", 1) + "/ari"
            self.stream = ari.EventStream(
                session,
                ws_base,
                s.ari.username,
                s.ari.password,
                s.ari.app,
                events=service.inbox,  # type: ignore[arg-type]  # one inbox keeps one order
                on_connected=self._on_connected,
            )
            metrics.watch(
                lambda: service.distributor.snapshot(time.time()),
                lambda: {
                    "siaga_outbox_pending": float(outbox.pending),
                    "siaga_ari_connected": float(bool(self.stream and self.stream.connected)),
                    "siaga_inbox_depth": float(service.inbox.qsize()),
                },
                counters=lambda: {
                    "siaga_ari_reconnects_total": float(
                        self.stream.reconnects if self.stream else 0
                    ),
                },
            )
            store = IncidentStore(s.database_dsn)

            def on_sign_in(event: SignInEvent) -> None:  # People logs it; this audits it
                audit_sink.post(
                    audit.sign_in(
                        event.outcome,
                        event.username,
                        source=event.source,
                        at=event.at,
                        user_id=event.user_id,
                        reason=event.reason,
                    )
                )

            people = People(
                s.people,
                dsn=s.database_dsn,
                state_path=s.people_path,
                profile=s.profile,
                on_sign_in=on_sign_in,
            )
            await people.open()
            app = build_app(
                distributor=service.distributor,
                conferences=service.conferences,
                submit=service.submit,
                metrics=metrics,
                tokens=s.http.tokens,
                health=self.health,
                incidents=store,
                centre=keeper,
                people=people,
                audit_sink=audit_sink,
            )
            restorer = CallbackRestorer(
                store, self.relay, lambda e: service.submit(core.CallbacksRestored(e))
            )
            keeper.attach(service.submit)
            runner = web.AppRunner(app, access_log=None)
            await runner.setup()
            site = web.TCPSite(runner, s.http.host, s.http.port)
            await site.start()
            self.http_port = _bound_port(runner)
            log.info(
                "service.started",
                http=f"{s.http.host}:{self.http_port}",
                ari=s.ari.url,
                app=s.ari.app,
                profile=s.profile,
            )
            tasks = {
                asyncio.create_task(self.stream.run(), name="ari-events"),
                asyncio.create_task(service.run(), name="consumer"),
                asyncio.create_task(self.journal.run(), name="journal"),
                asyncio.create_task(self.relay.run(), name="outbox-relay"),
                asyncio.create_task(self.fallback.run(), name="fallback-sweeper"),
            }
            if s.agencies_from_database:  # until it answers, the settings' directory serves
                watcher = AgencyWatcher(
                    s.database_dsn,
                    lambda d: service.submit(conference.DirectoryChanged(d)),
                )
                tasks.add(asyncio.create_task(watcher.run(), name="agency-directory"))
            stop = asyncio.create_task(self.stopping.wait(), name="stop")
            # Ends once done: not one of the tasks whose end stops the service.
            restoring = asyncio.create_task(restorer.run(), name="callback-restore")
            reloading = asyncio.create_task(keeper.run(), name="centre-reload")
            # Not one of them either: sign-in works from the local copy without it.
            directory = asyncio.create_task(people.run(), name="people")
            try:
                done, _ = await asyncio.wait(tasks | {stop}, return_when=asyncio.FIRST_COMPLETED)
                for t in done:
                    if t is not stop and not t.cancelled() and t.exception() is not None:
                        log.error(
                            "service.task_failed", task=t.get_name(), error=repr(t.exception())
                        )
                if any(_replaced(t) for t in done):
                    self.stepped_down = True
                    await self._step_down(service, tasks)
                else:
                    await self._shutdown(service)
            finally:
                restoring.cancel()
                reloading.cancel()
                directory.cancel()
                for t in tasks | {stop}:
                    t.cancel()
                await asyncio.gather(
                    *tasks, stop, restoring, reloading, directory, return_exceptions=True
                )
                await service.close()
                await audit_sink.flush()
                await store.close()
                await people.close()
                await runner.cleanup()
                log.info("service.stopped")

    def _fallback_sweeper(self, rest: ari.AriRest, recorder: IncidentRecorder) -> FallbackSweeper:
        """Journals the calls the dialplan fallback carried while we were away."""
        s = self.settings

        async def channel_alive(channel_id: str) -> bool:
            try:
                await rest.get_channel(channel_id)
            except Exception:  # noqa: BLE001 - gone, or Asterisk away: the file's age decides
                return False
            return True

        return FallbackSweeper(
            recorder,
            s.recording_dir,
            s.state_dir,
            channel_alive=channel_alive,
            incident_for=incident_id_for,
            journalled=self.journal.journalled if self.journal else lambda _name: False,
            language=s.prompts.language,
            interval_s=s.fallback_scan_s,
        )

    async def _on_connected(self) -> None:
        service = self.service
        if service is not None and self.handsets is not None:
            # New handsets first: the Resync subscribes to the takers' handsets.
            await self.handsets.sync_on_connect(
                handsets_for(
                    service.distributor.config,
                    service.conferences.directory,
                    self.settings.handsets.password_map(),
                ),
                resync=lambda: service.submit(Resync()),
            )
        elif service is not None:
            service.submit(Resync())
        if self.fallback is not None:
            self.fallback.poke()

    async def _step_down(self, service: CallService, tasks: set[asyncio.Task[Any]]) -> None:
        """Another instance took our Stasis app: it owns every call now. Touch
        none of them (no hand-back, no hang-up, no timers); keep what we journalled."""
        for t in tasks:
            if t.get_name() == "consumer":
                t.cancel()
        service.cancel_timers()
        service.journal_pending_recordings()  # calls that ended here are ours to journal
        log.critical(
            "service.stepped_down",
            reason="ApplicationReplaced: another instance registered the Stasis app",
            hint="this instance leaves all calls to the new one and exits; it does not reconnect",
        )
        if self.journal is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.journal.flush(), timeout=5.0)

    async def _shutdown(self, service: CallService) -> None:
        """Stop taking calls; leave bridged calls to Asterisk; flush the journal.

        Every step runs, whatever the one before it raised: a failed hand-back
        must not leave the journal unflushed (``shutdown_steps``)."""
        stream, journal = self.stream, self.journal

        async def close_stream() -> None:
            if stream is not None:
                await stream.close()

        async def settle() -> None:  # let the consumer finish what is queued, briefly
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(service.idle(), timeout=2.0)

        async def hand_back() -> None:
            await service.hand_back_waiting_callers()

        async def journal_recordings() -> None:
            service.journal_pending_recordings()

        async def flush() -> None:
            if journal is not None:
                await asyncio.wait_for(journal.flush(), timeout=5.0)

        await shutdown_steps(
            [
                ("close_stream", close_stream),
                ("settle", settle),
                ("hand_back", hand_back),
                ("journal_recordings", journal_recordings),
                ("flush_journal", flush),
            ]
        )

    def health(self) -> dict[str, Any]:
        connected = bool(self.stream and self.stream.connected)
        return {
            "status": "ok" if connected else "degraded",
            "ari_connected": connected,
            "ari_reconnects": self.stream.reconnects if self.stream else 0,
            "outbox_pending": self.relay.pending if self.relay else 0,
            "events_handled": self.service.handled if self.service else 0,
            # "uvloop" or "asyncio" (setting event_loop)
            "event_loop": type(asyncio.get_running_loop()).__module__.split(".")[0],
        }

    def install_signal_handlers(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.stopping.set)


async def shutdown_steps(steps: list[tuple[str, Callable[[], Awaitable[None]]]]) -> list[str]:
    """Run every step in order; a step that raises is logged and the next one
    still runs. Returns the names of the steps that failed."""
    failed: list[str] = []
    for name, step in steps:
        try:
            await step()
        except Exception as exc:  # noqa: BLE001 - the remaining steps must run
            failed.append(name)
            log.error("shutdown.step_failed", step=name, error=repr(exc)[:300])  # noqa: TRY400
    return failed


def build_app(
    *,
    distributor: core.Distributor,
    conferences: conference.Conferences,
    submit: Submit,
    metrics: Metrics,
    tokens: Mapping[str, str],
    health: Callable[[], dict[str, Any]],
    incidents: IncidentStore,
    centre: CentreKeeper,
    people: People,
    audit_sink: audit.AuditSink | None = None,
) -> web.Application:
    """The HTTP app with every route of the service: state and takers, incidents,
    callbacks, conference, the centre's configuration, people. The runtime serves it and
    the OpenAPI test (tests/unit/service/test_openapi.py) checks this same app, so a
    route group added here is in the document's check at once."""
    app = make_app(
        distributor=distributor,
        submit=submit,
        metrics_=metrics,
        tokens=tokens,
        health=health,
        audit_sink=audit_sink,
    )
    add_incident_routes(app, incidents, tokens)
    add_audit_routes(app, incidents)
    add_callback_routes(app, store=incidents, submit=submit, holds=distributor.holds_callback)
    add_conference_routes(app, conferences, submit)
    add_centre_routes(app, centre)
    app[CENTRE_AUDIT] = audit.note_change  # each change lands in its route's audit row
    add_people_routes(app, people)
    return app


def _replaced(task: asyncio.Task[Any]) -> bool:
    return (
        task.done()
        and not task.cancelled()
        and isinstance(task.exception(), ari.ApplicationReplacedError)
    )


def _bound_port(runner: web.AppRunner) -> int:
    for addr in runner.addresses:
        if isinstance(addr, tuple) and len(addr) >= 2:
            return int(addr[1])
    raise RuntimeError("HTTP server bound no address")
