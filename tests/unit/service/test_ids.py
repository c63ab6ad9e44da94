"""Deterministic, project-prefixed ids for Asterisk objects."""

from __future__ import annotations

import pytest

from siaga_pbx import ids


class TestIds:
    def test_bridge_round_trip(self) -> None:
        """A call's bridge id leads back to the call."""
        assert ids.call_id_from_bridge(ids.bridge_id("siaga-lab-17.3")) == "siaga-lab-17.3"
        assert ids.call_id_from_bridge("someone-elses-bridge") is None

    def test_offer_round_trip(self) -> None:
        """An offer id carries its call and attempt number."""
        assert ids.parse_offer_id(ids.offer_id("1732.5", 3)) == ("1732.5", 3)
        assert ids.parse_offer_id("siaga-offer-x") is None

    def test_system_named_caller_is_not_ours(self) -> None:
        """A caller uniqueid that begins with the system name is Asterisk's, not ours."""
        assert not ids.is_ours("siaga-test-1795897433.0")
        assert ids.is_ours(ids.offer_id("siaga-test-1795897433.0", 1))
        assert ids.is_ours(ids.bridge_id("1.2"))

    def test_recording_name_refuses_path_tricks(self) -> None:
        """A recording name is made only from safe ids."""
        assert ids.recording_name("1732.5") == "siaga-call-1732.5"
        with pytest.raises(ValueError, match="unsafe"):
            ids.recording_name("../../etc/passwd")
