"""ContactStatusChange: a handset gone without a BYE, as the translator sees it."""

from __future__ import annotations

import json
from typing import Any

import pytest

from siaga_pbx import ari, conference, core
from siaga_pbx.service import EVENTS_USED, TakerDirectory, translate

CALL = "1700000000.7"
OFFER = f"siaga-offer-{CALL}-2"
LEG = f"siaga-disp-{CALL}-3"
TAKERS = TakerDirectory.from_config(
    core.CentreConfig(
        queues=(core.QueueConfig("main"),),
        takers=(core.TakerConfig("taker4", "PJSIP/taker4"),),
    )
)


def contact_event(status: str, channel_ids: list[str], resource: str = "taker4") -> ari.Event:
    """The JSON Asterisk sends (main/stasis_endpoints.c, contactstatus_to_json)."""
    payload: dict[str, Any] = {
        "type": "ContactStatusChange",
        "application": "siaga-112",
        "timestamp": "2026-12-01T20:00:01.000+0000",
        "endpoint": {
            "technology": "PJSIP",
            "resource": resource,
            "state": "offline" if status == "Unreachable" else "online",
            "channel_ids": channel_ids,
        },
        "contact_info": {
            "uri": f"sip:{resource}@127.0.0.1:5074",
            "contact_status": status,
            "aor": resource,
            "roundtrip_usec": "0",
        },
    }
    ev = ari.parse_event(json.dumps(payload))
    assert isinstance(ev, ari.ContactStatusChange)
    return ev


def run(ev: ari.Event) -> list[object]:
    return list(translate(ev, TAKERS.taker_for, "main"))


class TestContactStatus:
    def test_unreachable_contact_loses_the_offer_on_it(self) -> None:
        """The taker's offer channel on an unreachable contact becomes HandsetLost."""
        ev = contact_event("Unreachable", [OFFER])
        assert run(ev) == [core.HandsetLost(OFFER)]

    def test_unreachable_contact_loses_the_party_leg_on_it(self) -> None:
        """A dispatcher's leg on an unreachable contact becomes PartyLost, for the conference."""
        ev = contact_event("Unreachable", [LEG], resource="disp-damkar")
        assert run(ev) == [conference.PartyLost(LEG)]

    def test_a_callers_channel_is_never_lost(self) -> None:
        """A channel Asterisk named (a caller from a softphone endpoint) is never touched."""
        ev = contact_event("Unreachable", [CALL, "siaga-lab-1700000000.9"], resource="lab-caller")
        assert run(ev) == []

    @pytest.mark.parametrize("status", ["Reachable", "Unknown", "NonQualified", "Removed"])
    def test_other_statuses_lose_nothing(self, status: str) -> None:
        """Only Unreachable is a loss; a removed contact may be a phone that moved address."""
        ev = contact_event(status, [OFFER, LEG])
        assert run(ev) == []

    def test_contact_status_is_in_the_event_filter(self) -> None:
        """Asterisk is asked to send ContactStatusChange to the app."""
        assert "ContactStatusChange" in EVENTS_USED
