"""Handsets without file edits: the PJSIP endpoint, auth and AOR of every
configured handset, created in Asterisk through ARI.

Asterisk keeps res_pjsip's endpoints, auths and AORs first in pjsip.conf
(read-only) and then in its own database, astdb (asterisk/sorcery.conf).
``HandsetProvisioner.sync`` makes the astdb part hold exactly the handsets it is
given, through ``PUT``/``DELETE /asterisk/config/dynamic/res_pjsip/...``:

- a handset Asterisk lacks is created: AOR, then auth, then endpoint, so the
  endpoint never names an AOR or auth that is not there yet;
- a handset whose objects differ from what we would push is pushed again; one
  that matches is left alone (no request but the reads), so a sync is idempotent;
- a handset that pjsip.conf defines (the lab and test handsets, the trunk) is
  *static*: it is never written or deleted, whatever the list says;
- a handset we created earlier and that is no longer listed is deleted
  (endpoint first, so it can no longer be identified), unless a channel is on
  it: then it stays until a later sync finds it idle, so no call is dropped.

Which objects are ours: our endpoints carry ``tenantid = siaga-handset:<fingerprint>``,
a digest of every non-secret field of the endpoint and its AOR. Asterisk spells
fields its own way when it answers (``allow`` as ``(ulaw|alaw|gsm)``), so the
fingerprint is what tells "as pushed" from "changed". ``tenantid`` only labels
the handset's channels (CDR and CEL are off); a channel variable (``set_var``)
would be the natural label, but astdb drops it: it stores ``set_var`` under the
variable's own name, which it then filters out as an unknown field on every
read. The password is not in the fingerprint (the label is readable by anyone
with ARI or the CLI): it is compared with the auth's own field instead.

Asterisk keeps these objects across its restarts (astdb); the runtime still
calls ``sync`` on every ARI connect, so that what Asterisk holds follows the
configuration, including changes made while Asterisk was down or restored from
an old backup. Passwords are never logged: the log lines name handset ids only.

The objects mirror pjsip.conf's ``handset-endpoint``, ``handset-auth`` and
``handset-aor`` templates (``pjsip_fields``); tests/e2e/test_handset_provisioning.py
compares a provisioned handset with a static one field by field.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import structlog

from .. import ari, conference, core

__all__ = [
    "MARKER_FIELD",
    "MARKER_PREFIX",
    "Handset",
    "HandsetProvisioner",
    "HandsetSite",
    "PjsipObjects",
    "SyncReport",
    "handsets_for",
    "pjsip_fields",
]

log = structlog.get_logger(__name__)

CONFIG_CLASS = "res_pjsip"
MARKER_FIELD = "tenantid"  # the endpoint field that says "ours" (module docstring)
MARKER_PREFIX = "siaga-handset:"
TAKER_CONTEXT = "from-takers"  # feature codes and the keypad; dispatchers use it too
_TECH = "PJSIP"
_FORBIDDEN = 403  # a read-only (pjsip.conf) object


@dataclass(frozen=True, slots=True)
class Handset:
    """One SIP handset to provision: a call taker's or a dispatcher's phone.

    ``endpoint_id`` is the PJSIP resource (``taker9`` for ``PJSIP/taker9``); it is
    also the auth's digest user name and the AOR's name. A plain record so that
    it can come from the TOML file or the configuration database alike."""

    endpoint_id: str
    password: str = field(repr=False)
    caller_name: str
    context: str = TAKER_CONTEXT

    def __post_init__(self) -> None:
        ari.check_id("endpoint_id", self.endpoint_id)
        if not self.password or not self.password.isprintable():
            raise ValueError(f"handset {self.endpoint_id}: the password must be printable text")
        if not self.caller_name.isprintable() or any(c in self.caller_name for c in '"<>'):
            raise ValueError(f"handset {self.endpoint_id}: caller name without quotes or <>")


@dataclass(frozen=True, slots=True)
class HandsetSite:
    """What differs between sites (the ``${...}`` of pjsip.conf's handset templates)."""

    transport: str = "transport-udp"
    media_address: str = "127.0.0.1"  # MEDIA_ADDR
    qualify_frequency_s: int = 30  # AOR_QUALIFY_FREQUENCY; 0 = never qualified


@dataclass(frozen=True, slots=True)
class PjsipObjects:
    """The fields of one handset's three sorcery objects, in the order pushed."""

    endpoint: tuple[tuple[str, str], ...]
    auth: tuple[tuple[str, str], ...]
    aor: tuple[tuple[str, str], ...]
    fingerprint: str


def pjsip_fields(handset: Handset, site: HandsetSite) -> PjsipObjects:
    """The endpoint, auth and AOR of ``handset``: pjsip.conf's handset templates."""
    hid = handset.endpoint_id
    aor = (
        ("max_contacts", "1"),
        ("remove_existing", "yes"),
        ("qualify_frequency", str(site.qualify_frequency_s)),
        ("qualify_timeout", "3.0"),
        ("default_expiration", "300"),
        ("minimum_expiration", "60"),
    )
    auth = (("auth_type", "digest"), ("username", hid), ("password", handset.password))
    endpoint = (
        # [endpoint-base]
        ("transport", site.transport),
        ("disallow", "all"),
        ("allow", "ulaw,alaw,gsm"),  # [handset-endpoint]
        ("direct_media", "no"),  # media stays in Asterisk: recording, supervision
        ("rtp_symmetric", "yes"),
        ("force_rport", "yes"),
        ("rewrite_contact", "yes"),
        ("media_address", site.media_address),
        ("bind_rtp_to_media_address", "yes"),
        ("rtp_timeout", "0"),  # silent ("ghost") callers are kept, never cut
        ("dtmf_mode", "rfc4733"),
        ("language", "id"),
        ("moh_suggest", "default"),
        ("timers", "yes"),
        ("send_connected_line", "yes"),
        ("allow_unauthenticated_options", "no"),
        # [handset-endpoint]
        ("send_pai", "yes"),  # call takers see the caller's identity
        ("trust_id_outbound", "yes"),
        ("device_state_busy_at", "1"),
        # the handset itself
        ("context", handset.context),
        ("auth", hid),
        ("aors", hid),
        ("callerid", f'"{handset.caller_name}" <{hid}>'),
    )
    digest = hashlib.sha256(
        json.dumps([endpoint, aor, hid], separators=(",", ":")).encode()
    ).hexdigest()[:16]
    return PjsipObjects(
        endpoint=(*endpoint, (MARKER_FIELD, MARKER_PREFIX + digest)),
        auth=auth,
        aor=aor,
        fingerprint=digest,
    )


@dataclass
class SyncReport:
    """What one ``sync`` did, by handset id (never a password)."""

    created: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    static: list[str] = field(default_factory=list)  # defined in pjsip.conf: left alone
    deleted: list[str] = field(default_factory=list)
    kept_busy: list[str] = field(default_factory=list)  # unlisted but on a call: later
    failed: list[str] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return bool(self.created or self.updated or self.deleted)


class HandsetProvisioner:
    """Makes Asterisk hold exactly the given handsets (see the module's docstring)."""

    def __init__(self, rest: ari.AriRest, site: HandsetSite | None = None) -> None:
        self._rest = rest
        self._site = site or HandsetSite()
        self._lock = asyncio.Lock()  # one sync at a time: connect and a live change

    async def sync(self, handsets: Iterable[Handset]) -> SyncReport:
        """Create or update every listed handset, delete our unlisted ones.

        A handset that fails (Asterisk refuses a field, or stops answering) is
        reported in ``failed`` and the others still go ahead; ``AriUnavailable``
        while listing endpoints ends the sync early (it raises)."""
        wanted = _unique(handsets)
        report = SyncReport()
        async with self._lock:
            for handset in wanted.values():
                await self._ensure(handset, report)
            await self._remove_unlisted(set(wanted), report)
        _log_report(report)
        return report

    async def sync_on_connect(
        self,
        handsets: Iterable[Handset],
        resync: Callable[[], None],
        timeout_s: float = 10.0,
    ) -> SyncReport:
        """``sync`` for the ARI connect, around the service's ``resync``.

        The listed handsets are created first, so that the resync finds the new
        takers' endpoints to follow; ``resync`` is called next, whatever happened;
        the unlisted ones are deleted last, off the resync's way (with no handset
        to push, the resync starts as early as it did without provisioning). Each
        half is bounded in time and nothing raises: a handset Asterisk refuses
        never keeps the service from its calls (pjsip.conf's handsets, and those
        Asterisk kept, still work)."""
        report = SyncReport()
        async with self._lock:
            wanted: set[str] | None = None  # None: the list was not got through
            try:
                async with asyncio.timeout(timeout_s):
                    listed = _unique(handsets)
                    for handset in listed.values():
                        await self._ensure(handset, report)
                    wanted = set(listed)
            except (ari.AriError, TimeoutError, ValueError) as exc:
                log.error("handsets.sync_failed", phase="create", error=str(exc)[:300])  # noqa: TRY400
            resync()
            if wanted is not None:  # never delete by a list we did not get through
                try:
                    async with asyncio.timeout(timeout_s):
                        await self._remove_unlisted(wanted, report)
                except (ari.AriError, TimeoutError) as exc:
                    log.error("handsets.sync_failed", phase="delete", error=str(exc)[:300])  # noqa: TRY400
        _log_report(report)
        return report

    async def _ensure(self, handset: Handset, report: SyncReport) -> None:
        hid = handset.endpoint_id
        objects = pjsip_fields(handset, self._site)
        try:
            current = await self._get("endpoint", hid)
            if current is not None and not _ours(current):
                report.static.append(hid)
                log.warning(
                    "handsets.static",
                    handset=hid,
                    hint="defined in pjsip.conf: its password and fields there apply",
                )
                return
            if current is not None and await self._as_pushed(hid, current, objects):
                report.unchanged.append(hid)
                return
            await self._put("aor", hid, objects.aor)
            await self._put("auth", hid, objects.auth)
            await self._put("endpoint", hid, objects.endpoint)
        except ari.AriError as exc:
            report.failed.append(hid)
            log.error(  # noqa: TRY400 - the ARI error says it all; no traceback needed
                "handsets.push_failed", handset=hid, status=exc.status, error=exc.message
            )
            return
        (report.created if current is None else report.updated).append(hid)

    async def _as_pushed(
        self, hid: str, endpoint: Mapping[str, str], objects: PjsipObjects
    ) -> bool:
        if endpoint.get(MARKER_FIELD) != MARKER_PREFIX + objects.fingerprint:
            return False
        aor = await self._get("aor", hid)
        auth = await self._get("auth", hid)
        wanted_auth = dict(objects.auth)
        return (
            aor is not None
            and auth is not None
            and auth.get("username") == wanted_auth["username"]
            and auth.get("password") == wanted_auth["password"]
        )

    async def _remove_unlisted(self, wanted: set[str], report: SyncReport) -> None:
        for endpoint in await self._rest.list_endpoints(_TECH):
            hid = endpoint.resource
            if hid in wanted:
                continue
            try:
                current = await self._get("endpoint", hid)
                if current is None or not _ours(current):
                    continue  # static (pjsip.conf), or gone meanwhile
                if endpoint.channel_ids:
                    report.kept_busy.append(hid)
                    continue
                for object_type in ("endpoint", "auth", "aor"):
                    with contextlib.suppress(ari.AriNotFound):
                        await self._rest.delete_config_object(CONFIG_CLASS, object_type, hid)
            except ari.AriError as exc:
                report.failed.append(hid)
                log.error(  # noqa: TRY400
                    "handsets.delete_failed", handset=hid, status=exc.status, error=exc.message
                )
                continue
            report.deleted.append(hid)

    async def _get(self, object_type: str, hid: str) -> dict[str, str] | None:
        try:
            tuples = await self._rest.get_config_object(CONFIG_CLASS, object_type, hid)
        except ari.AriNotFound:
            return None
        return {t.attribute: t.value for t in tuples}

    async def _put(self, object_type: str, hid: str, fields: Sequence[tuple[str, str]]) -> None:
        await self._rest.put_config_object(CONFIG_CLASS, object_type, hid, fields)


def _log_report(report: SyncReport) -> None:
    log.info(
        "handsets.synced",
        created=report.created,
        updated=report.updated,
        unchanged=len(report.unchanged),
        static=report.static,
        deleted=report.deleted,
        kept_busy=report.kept_busy,
        failed=report.failed,
    )


def _ours(endpoint: Mapping[str, str]) -> bool:
    return endpoint.get(MARKER_FIELD, "").startswith(MARKER_PREFIX)


def _unique(handsets: Iterable[Handset]) -> dict[str, Handset]:
    out: dict[str, Handset] = {}
    for h in handsets:
        if h.endpoint_id in out and out[h.endpoint_id] != h:
            raise ValueError(f"handset {h.endpoint_id} is listed twice, differently")
        out[h.endpoint_id] = h
    return out


def handsets_for(
    centre: core.CentreConfig,
    directory: conference.AgencyDirectory,
    passwords: Mapping[str, str],
) -> list[Handset]:
    """The handsets to provision: every PJSIP endpoint of a call taker or of an
    agency's dispatchers that has a password in ``passwords`` (by endpoint id).

    An endpoint without a password is expected to be static in pjsip.conf (the
    lab's and the tests' handsets); the sync leaves pjsip.conf's ones alone anyway.
    A handset that cannot be one (a password with control characters, an id no
    ARI path can carry) is logged and left out, never raised: this runs on connect."""
    named: dict[str, str] = {}
    for taker in centre.takers:
        if (hid := _pjsip_resource(taker.endpoint)) is not None:
            named.setdefault(hid, taker.taker_id)
    for agency in directory.agencies:
        for endpoint in agency.endpoints:
            if (hid := _pjsip_resource(endpoint)) is not None:
                named.setdefault(hid, _printable_name(agency.name))
    handsets = []
    for hid, name in named.items():
        if hid not in passwords:
            continue
        try:
            handsets.append(Handset(endpoint_id=hid, password=passwords[hid], caller_name=name))
        except ValueError as exc:  # the message names the handset, never the password
            log.error("handsets.invalid", handset=hid, error=str(exc))  # noqa: TRY400
    return handsets


def _pjsip_resource(endpoint: str) -> str | None:
    tech, _, resource = endpoint.partition("/")
    return resource if tech == _TECH and resource else None


def _printable_name(name: str) -> str:
    return "".join(c for c in name if c.isprintable() and c not in '"<>')
