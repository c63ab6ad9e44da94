"""HandsetProvisioner against the scripted fake ARI, which plays res_pjsip's sorcery:
pjsip.conf objects (read-only: 403 on PUT/DELETE) and astdb ones (writable), answered
in Asterisk's own spelling, as the real one does."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest
from structlog.testing import capture_logs

from siaga_pbx import ari, conference, config, core
from siaga_pbx.adapters.handsets import (
    Handset,
    HandsetProvisioner,
    HandsetSite,
    handsets_for,
    pjsip_fields,
)

from ._fake_ari import PASSWORD, USERNAME, FakeAri, RecordedRequest

pytestmark = pytest.mark.timeout(10)

_PATH = re.compile(r"/asterisk/config/dynamic/res_pjsip/(endpoint|auth|aor)/([^/]+)")
_BOOL = {"yes": "true", "no": "false"}


def _asterisk_spelling(attribute: str, value: str) -> str:
    # What Asterisk answers for what it was given (see the module docstring).
    if attribute == "allow":
        return "(" + value.replace(",", "|") + ")"
    if attribute == "qualify_timeout":
        return f"{float(value):.6f}"
    return _BOOL.get(value, value)


@dataclass
class FakeSorcery:
    """res_pjsip's endpoint/auth/aor objects: ``static`` ones from pjsip.conf, the rest ours."""

    objects: dict[tuple[str, str], dict[str, str]] = field(default_factory=dict)
    static: set[tuple[str, str]] = field(default_factory=set)
    busy: set[str] = field(default_factory=set)  # endpoints with a channel on them
    fail_put: set[tuple[str, str]] = field(default_factory=set)

    def add_static(self, hid: str) -> None:
        for object_type in ("endpoint", "auth", "aor"):
            self.objects[(object_type, hid)] = {"username": hid, "password": "from-pjsip-conf"}
            self.static.add((object_type, hid))

    def __call__(self, req: RecordedRequest) -> tuple[int, Any] | None:
        if req.method == "GET" and req.path == "/endpoints/PJSIP":
            return 200, [
                {
                    "technology": "PJSIP",
                    "resource": hid,
                    "state": "online",
                    "channel_ids": ["1.1"] if hid in self.busy else [],
                }
                for (object_type, hid) in self.objects
                if object_type == "endpoint"
            ]
        m = _PATH.fullmatch(req.path)
        if m is None:
            return None
        key = (m.group(1), m.group(2))
        current = self.objects.get(key)
        if req.method == "GET":
            return (404, {"message": "not found"}) if current is None else (200, _tuples(current))
        if req.method == "DELETE":
            if current is None:
                return 404, {"message": "not found"}
            if key in self.static:
                return 403, {"message": "Could not delete object"}
            del self.objects[key]
            return 204, None
        if req.method == "PUT":
            if key in self.static:
                return 403, {"message": "Cannot update sorcery objects"}
            if key in self.fail_put:
                return 400, {"message": "failed field value validation"}
            obj = dict(current or {})
            for f in req.body["fields"]:
                obj[f["attribute"]] = _asterisk_spelling(f["attribute"], f["value"])
            self.objects[key] = obj
            return 200, _tuples(obj)
        return None


def _tuples(obj: dict[str, str]) -> list[dict[str, str]]:
    return [{"attribute": k, "value": v} for k, v in obj.items()]


def _writes(fake: FakeAri) -> list[tuple[str, str]]:
    return [(r.method, r.path) for r in fake.requests if r.method in ("PUT", "DELETE")]


def _handset(hid: str = "taker9", password: str = "s3cret-taker9") -> Handset:
    return Handset(endpoint_id=hid, password=password, caller_name=hid)


@pytest.fixture
def sorcery(fake_ari: FakeAri) -> FakeSorcery:
    store = FakeSorcery()
    store.add_static("taker1")
    store.add_static("trunk")
    fake_ari.handler = store
    return store


@pytest.fixture
def provisioner(session: aiohttp.ClientSession, fake_ari: FakeAri) -> HandsetProvisioner:
    rest = ari.AriRest(session, fake_ari.http_url, USERNAME, PASSWORD, timeout_s=2.0)
    return HandsetProvisioner(rest, HandsetSite(media_address="127.0.0.1", qualify_frequency_s=0))


async def test_a_new_handset_is_created_aor_auth_endpoint_and_a_second_sync_writes_nothing(
    provisioner: HandsetProvisioner, fake_ari: FakeAri, sorcery: FakeSorcery
) -> None:
    """The first sync creates AOR, auth, endpoint in that order; the same sync again only reads."""
    first = await provisioner.sync([_handset()])
    assert first.created == ["taker9"]
    base = "/asterisk/config/dynamic/res_pjsip"
    assert _writes(fake_ari) == [
        ("PUT", f"{base}/aor/taker9"),
        ("PUT", f"{base}/auth/taker9"),
        ("PUT", f"{base}/endpoint/taker9"),
    ]
    endpoint_put = next(
        r.body["fields"]
        for r in fake_ari.requests
        if r.path == f"{base}/endpoint/taker9" and r.method == "PUT"
    )
    assert {"attribute": "context", "value": "from-takers"} in endpoint_put
    assert {"attribute": "aors", "value": "taker9"} in endpoint_put

    fake_ari.requests.clear()
    second = await provisioner.sync([_handset()])
    assert (second.created, second.updated, second.unchanged) == ([], [], ["taker9"])
    assert _writes(fake_ari) == []
    assert not second.changed


async def test_a_changed_password_or_site_value_is_pushed_again(
    provisioner: HandsetProvisioner, fake_ari: FakeAri, sorcery: FakeSorcery
) -> None:
    """A new password updates the handset; so does a changed field of its endpoint or AOR."""
    await provisioner.sync([_handset()])
    fake_ari.requests.clear()
    report = await provisioner.sync([_handset(password="an0ther-secret")])
    assert report.updated == ["taker9"]
    assert sorcery.objects[("auth", "taker9")]["password"] == "an0ther-secret"

    requalified = HandsetProvisioner(
        provisioner._rest, HandsetSite(media_address="127.0.0.1", qualify_frequency_s=30)
    )
    report = await requalified.sync([_handset(password="an0ther-secret")])
    assert report.updated == ["taker9"]
    assert sorcery.objects[("aor", "taker9")]["qualify_frequency"] == "30"


async def test_pjsip_conf_handsets_are_never_written_or_deleted(
    provisioner: HandsetProvisioner, fake_ari: FakeAri, sorcery: FakeSorcery
) -> None:
    """A listed handset that pjsip.conf defines is reported static; unlisted static ones stay."""
    report = await provisioner.sync([_handset("taker1")])
    assert report.static == ["taker1"] and report.deleted == []
    assert _writes(fake_ari) == []
    report = await provisioner.sync([])
    assert report.deleted == []
    assert ("endpoint", "trunk") in sorcery.objects and ("endpoint", "taker1") in sorcery.objects


async def test_an_unlisted_handset_of_ours_is_deleted_unless_a_call_is_on_it(
    provisioner: HandsetProvisioner, fake_ari: FakeAri, sorcery: FakeSorcery
) -> None:
    """Ours and unlisted: deleted endpoint first; with a channel on it, kept for a later sync."""
    await provisioner.sync([_handset("taker8"), _handset("taker9")])
    sorcery.busy.add("taker8")
    fake_ari.requests.clear()
    report = await provisioner.sync([])
    assert report.deleted == ["taker9"] and report.kept_busy == ["taker8"]
    base = "/asterisk/config/dynamic/res_pjsip"
    assert _writes(fake_ari) == [
        ("DELETE", f"{base}/endpoint/taker9"),
        ("DELETE", f"{base}/auth/taker9"),
        ("DELETE", f"{base}/aor/taker9"),
    ]
    sorcery.busy.clear()
    assert (await provisioner.sync([])).deleted == ["taker8"]
    assert not any(hid.startswith("taker8") for _, hid in sorcery.objects)


async def test_one_refused_handset_does_not_stop_the_others(
    provisioner: HandsetProvisioner, sorcery: FakeSorcery
) -> None:
    """Asterisk refusing one handset's object fails that handset only."""
    sorcery.fail_put.add(("auth", "taker8"))
    report = await provisioner.sync([_handset("taker8"), _handset("taker9")])
    assert report.failed == ["taker8"] and report.created == ["taker9"]
    assert ("endpoint", "taker8") not in sorcery.objects  # never named before its auth


async def test_passwords_are_never_logged(
    provisioner: HandsetProvisioner, sorcery: FakeSorcery
) -> None:
    """No log line of a sync, nor a handset's repr, carries a password."""
    sorcery.fail_put.add(("auth", "taker8"))
    with capture_logs() as logs:
        await provisioner.sync([_handset("taker8", "pw-eight-XYZ"), _handset("taker9", "pw-nine")])
        await provisioner.sync([])
    text = repr(logs) + repr(_handset("taker9", "pw-nine"))
    assert logs and "pw-eight-XYZ" not in text and "pw-nine" not in text


async def test_the_connect_sync_never_raises_and_resyncs_when_asterisk_is_away(
    session: aiohttp.ClientSession,
) -> None:
    """sync_on_connect logs instead of raising, calls the resync once, deletes nothing."""
    rest = ari.AriRest(session, "http://127.0.0.1:9/ari", USERNAME, PASSWORD, timeout_s=0.5)
    resyncs: list[int] = []
    with capture_logs() as logs:
        report = await HandsetProvisioner(rest).sync_on_connect(
            [_handset()], resync=lambda: resyncs.append(1)
        )
    assert resyncs == [1]
    assert report.failed == ["taker9"] and report.deleted == []
    assert any(e["event"] == "handsets.push_failed" for e in logs)


async def test_the_connect_sync_creates_before_the_resync_and_deletes_after_it(
    provisioner: HandsetProvisioner, fake_ari: FakeAri, sorcery: FakeSorcery
) -> None:
    """On connect the listed handsets exist when the resync starts; unlisted ones go after it."""
    await provisioner.sync([_handset("taker8")])
    fake_ari.requests.clear()
    seen_at_resync: list[list[tuple[str, str]]] = []
    report = await provisioner.sync_on_connect(
        [_handset("taker9")], resync=lambda: seen_at_resync.append(_writes(fake_ari))
    )
    assert report.created == ["taker9"] and report.deleted == ["taker8"]
    base = "/asterisk/config/dynamic/res_pjsip"
    assert seen_at_resync == [
        [
            ("PUT", f"{base}/aor/taker9"),
            ("PUT", f"{base}/auth/taker9"),
            ("PUT", f"{base}/endpoint/taker9"),
        ]
    ]
    assert ("DELETE", f"{base}/endpoint/taker8") in _writes(fake_ari)


async def test_no_handset_to_push_means_the_resync_is_not_delayed(
    provisioner: HandsetProvisioner, fake_ari: FakeAri, sorcery: FakeSorcery
) -> None:
    """With no handsets listed, the resync is called before any request to Asterisk."""
    requests_at_resync: list[int] = []
    await provisioner.sync_on_connect(
        [], resync=lambda: requests_at_resync.append(len(fake_ari.requests))
    )
    assert requests_at_resync == [0]


def test_handsets_for_takes_takers_and_dispatchers_with_a_password() -> None:
    """Only PJSIP endpoints of takers and agencies that have a password become handsets."""
    queue = core.QueueConfig(name="main")
    centre = core.CentreConfig(
        queues=(queue,),
        takers=(
            core.TakerConfig(taker_id="taker1", endpoint="PJSIP/taker1"),
            core.TakerConfig(taker_id="taker9", endpoint="PJSIP/taker9"),
        ),
    )
    directory = conference.AgencyDirectory(
        (
            conference.Agency(
                code="damkar",
                name='Damkar "pemadam"',
                endpoints=("PJSIP/disp-new", "PJSIP/disp-old"),
            ),
        )
    )
    handsets = handsets_for(
        centre, directory, {"taker9": "pw9", "disp-new": "pwd", "elsewhere": "pw"}
    )
    assert [(h.endpoint_id, h.caller_name) for h in handsets] == [
        ("taker9", "taker9"),
        ("disp-new", "Damkar pemadam"),
    ]
    with capture_logs() as logs:
        bad = handsets_for(centre, directory, {"taker9": "pw\n9", "disp-new": "pwd"})
    assert [h.endpoint_id for h in bad] == ["disp-new"]
    assert [e["handset"] for e in logs if e["event"] == "handsets.invalid"] == ["taker9"]


def test_the_fields_follow_the_handset_templates_of_pjsip_conf() -> None:
    """The endpoint keeps media in Asterisk, never times out silent callers, and names its own
    auth and AOR; the fingerprint ignores the password."""
    site = HandsetSite(media_address="10.0.0.5", qualify_frequency_s=30)
    objects = pjsip_fields(_handset(), site)
    endpoint = dict(objects.endpoint)
    assert endpoint["direct_media"] == "no" and endpoint["rtp_timeout"] == "0"
    assert endpoint["media_address"] == "10.0.0.5"
    assert (endpoint["auth"], endpoint["aors"]) == ("taker9", "taker9")
    assert dict(objects.aor)["qualify_frequency"] == "30"
    assert objects.fingerprint == pjsip_fields(_handset(password="other-pw"), site).fingerprint


async def test_a_config_value_with_control_characters_is_refused_without_echoing_it(
    session: aiohttp.ClientSession, fake_ari: FakeAri
) -> None:
    """put_config_object refuses a value with a newline before sending, naming only the field."""
    rest = ari.AriRest(session, fake_ari.http_url, USERNAME, PASSWORD, timeout_s=2.0)
    with pytest.raises(ari.InvalidArgument) as refused:
        await rest.put_config_object("res_pjsip", "auth", "taker9", [("password", "pw\nx")])
    message = str(refused.value)
    assert "'password'" in message and "pw\nx" not in message and "pw\\nx" not in message
    assert fake_ari.requests == []


def test_production_refuses_short_handset_passwords() -> None:
    """A production configuration with a handset password under 12 characters does not load."""
    with pytest.raises(config.ConfigError, match=r"handsets.passwords.*taker9"):
        config.load(
            profile="production",
            ari={"password": "a-long-ari-secret"},
            http={"tokens": {"a-real-admin-token-1234": "admin"}},
            handsets={"passwords": {"taker9": "short", "taker8": "long-enough-secret"}},
        )
    ok = config.load(
        profile="production",
        ari={"password": "a-long-ari-secret"},
        http={"tokens": {"a-real-admin-token-1234": "admin"}},
        handsets={"passwords": {"taker9": "long-enough-secret"}},
    )
    assert ok.handsets.password_map() == {"taker9": "long-enough-secret"}
    assert "long-enough-secret" not in repr(ok)
