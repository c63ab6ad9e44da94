"""The resync asks Asterisk for every endpoint's contact status (vanished handsets)."""

from __future__ import annotations

import aiohttp
from structlog.testing import capture_logs

from siaga_pbx import ari
from siaga_pbx.service import resynchronise

from ._fake_ari import PASSWORD, USERNAME, FakeAri
from .test_shell_recovery import APP, Journal, make_service, script


def subscriptions(fake: FakeAri) -> list[str]:
    return [
        r.query.get("eventSource", "")
        for r in fake.requests
        if (r.method, r.path) == ("POST", f"/applications/{APP}/subscription")
    ]


class TestContactStatusSubscription:
    async def test_resync_subscribes_to_all_endpoints(
        self, session: aiohttp.ClientSession, fake_ari: FakeAri
    ) -> None:
        """Every (re)connect subscribes the app to "endpoint:", all endpoints' states."""
        script(fake_ari)
        app = {"name": APP, "channel_ids": [], "bridge_ids": [], "endpoint_ids": []}
        fake_ari.reply("POST", f"/applications/{APP}/subscription", 200, app | {"device_names": []})
        rest = ari.AriRest(session, fake_ari.http_url, USERNAME, PASSWORD, timeout_s=2)
        await resynchronise(make_service(Journal(), [2000.0]), rest, APP)
        assert "endpoint:" in subscriptions(fake_ari)

    async def test_a_refused_subscription_is_logged_and_the_resync_goes_on(
        self, session: aiohttp.ClientSession, fake_ari: FakeAri
    ) -> None:
        """Asterisk refusing it costs the detection only: the calls are still adopted."""
        script(fake_ari)  # no reply scripted for the subscription: 404
        rest = ari.AriRest(session, fake_ari.http_url, USERNAME, PASSWORD, timeout_s=2)
        service = make_service(Journal(), [2000.0])
        with capture_logs() as logs:
            await resynchronise(service, rest, APP)
        assert service.distributor.connected_attempts() == {"siaga-offer-1.1-2": "1.1"}
        assert [e["event"] for e in logs].count("recovery.contact_status_unavailable") == 1
