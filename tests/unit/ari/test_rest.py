"""AriRest against a scripted fake ARI server: paths, parameters, errors."""

from __future__ import annotations

import socket

import aiohttp
import pytest
from structlog.testing import capture_logs

from siaga_pbx import ari
from siaga_pbx.ari import AriRest

from . import _samples
from ._fake_ari import PASSWORD, USERNAME, FakeAri

pytestmark = pytest.mark.timeout(5)


def _client(
    session: aiohttp.ClientSession,
    fake: FakeAri,
    *,
    password: str = PASSWORD,
    timeout_s: float = 2.0,
) -> AriRest:
    return AriRest(session, fake.http_url, USERNAME, password, timeout_s=timeout_s)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class TestSuccessfulRequests:
    async def test_get_channel_parses_the_channel(
        self, session: aiohttp.ClientSession, fake_ari: FakeAri
    ) -> None:
        """get_channel GETs /channels/{id} with basic auth and returns a Channel."""
        fake_ari.reply("GET", "/channels/1732812345.12", 200, _samples.channel())
        channel = await _client(session, fake_ari).get_channel("1732812345.12")
        assert channel.id == "1732812345.12"
        assert channel.caller.number == "081234567890"
        assert fake_ari.requests[-1].authorized

    async def test_get_application_for_resync(
        self, session: aiohttp.ClientSession, fake_ari: FakeAri
    ) -> None:
        """get_application returns the channel and bridge ids Asterisk holds for the app."""
        fake_ari.reply(
            "GET",
            "/applications/siaga112",
            200,
            {
                "name": "siaga112",
                "channel_ids": ["1.1", "1.2"],
                "bridge_ids": ["siaga-call-1.1"],
                "endpoint_ids": [],
                "device_names": [],
                "events_allowed": [],
                "events_disallowed": [],
            },
        )
        app = await _client(session, fake_ari).get_application("siaga112")
        assert app.channel_ids == ("1.1", "1.2")
        assert app.bridge_ids == ("siaga-call-1.1",)

    async def test_originate_sends_our_ids_args_and_variables(
        self, session: aiohttp.ClientSession, fake_ari: FakeAri
    ) -> None:
        """originate POSTs /channels with channelId, comma-joined appArgs and a variables body."""
        fake_ari.reply("POST", "/channels", 200, _samples.channel("siaga-offer-1.1-1"))
        channel = await _client(session, fake_ari).originate(
            "PJSIP/1001",
            channel_id="siaga-offer-1.1-1",
            app="siaga112",
            app_args=["offer", "1.1"],
            timeout_s=20,
            caller_id="112 <112>",
            variables={"CALLERID(name)": "Darurat"},
        )
        assert channel.id == "siaga-offer-1.1-1"
        request = fake_ari.requests[-1]
        assert request.query == {
            "endpoint": "PJSIP/1001",
            "channelId": "siaga-offer-1.1-1",
            "app": "siaga112",
            "appArgs": "offer,1.1",
            "timeout": "20",
            "callerId": "112 <112>",
        }
        assert request.body == {"variables": {"CALLERID(name)": "Darurat"}}

    async def test_query_parameters_are_url_encoded(
        self, session: aiohttp.ClientSession, fake_ari: FakeAri
    ) -> None:
        """A caller id with quotes, spaces, '&', '=' and unicode reaches Asterisk intact."""
        caller_id = '"Ibu Siti ☎ Ñoño" <+62 812&x=1>'
        fake_ari.reply("POST", "/channels", 200, _samples.channel("siaga-offer-1.1-2"))
        await _client(session, fake_ari).originate(
            "PJSIP/1001", channel_id="siaga-offer-1.1-2", app="siaga112", caller_id=caller_id
        )
        request = fake_ari.requests[-1]
        assert request.query["callerId"] == caller_id
        assert "x" not in request.query
        for raw_char in ('"', " ", "☎", "<"):
            assert raw_char not in request.raw_query

    async def test_add_channel_joins_ids_and_spells_booleans_for_ari(
        self, session: aiohttp.ClientSession, fake_ari: FakeAri
    ) -> None:
        """add_channel comma-joins channel ids and spells mute as ARI's 'true'."""
        fake_ari.reply("POST", "/bridges/siaga-call-1.1/addChannel", 204)
        await _client(session, fake_ari).add_channel(
            "siaga-call-1.1", ["1.1", "siaga-offer-1.1-1"], role="caller", mute=True
        )
        assert fake_ari.requests[-1].query == {
            "channel": "1.1,siaga-offer-1.1-1",
            "role": "caller",
            "mute": "true",
        }

    async def test_play_uses_our_playback_id_and_joins_media(
        self, session: aiohttp.ClientSession, fake_ari: FakeAri
    ) -> None:
        """play POSTs /channels/{id}/play/{playback_id} with media joined by commas."""
        fake_ari.reply("POST", "/channels/1.1/play/siaga-pb-1", 201, _samples.playback())
        playback = await _client(session, fake_ari).play(
            "1.1", ["sound:siaga/welcome", "sound:siaga/wait"], "siaga-pb-1", lang="id"
        )
        assert playback.id == "siaga-pb-1"
        assert fake_ari.requests[-1].query == {
            "media": "sound:siaga/welcome,sound:siaga/wait",
            "lang": "id",
        }

    async def test_create_bridge_and_record_it(
        self, session: aiohttp.ClientSession, fake_ari: FakeAri
    ) -> None:
        """create_bridge POSTs /bridges/{id}; record_bridge returns a LiveRecording."""
        fake_ari.reply("POST", "/bridges/siaga-call-1.1", 200, _samples.bridge("siaga-call-1.1"))
        fake_ari.reply("POST", "/bridges/siaga-call-1.1/record", 201, _samples.recording())
        client = _client(session, fake_ari)
        bridge = await client.create_bridge("siaga-call-1.1", name="call 1.1")
        recording = await client.record_bridge("siaga-call-1.1", "siaga-call-1.1")
        assert bridge.bridge_type == "mixing"
        assert recording.state == "recording"
        assert [(r.path, r.query) for r in fake_ari.requests] == [
            ("/bridges/siaga-call-1.1", {"type": "mixing", "name": "call 1.1"}),
            (
                "/bridges/siaga-call-1.1/record",
                {"name": "siaga-call-1.1", "format": "wav", "ifExists": "fail"},
            ),
        ]

    async def test_hangup_sends_the_reason(
        self, session: aiohttp.ClientSession, fake_ari: FakeAri
    ) -> None:
        """hangup DELETEs /channels/{id} with the reason as a query parameter."""
        fake_ari.reply("DELETE", "/channels/1.1", 204)
        await _client(session, fake_ari).hangup("1.1", reason="congestion")
        assert (fake_ari.requests[-1].method, fake_ari.requests[-1].query) == (
            "DELETE",
            {"reason": "congestion"},
        )

    async def test_get_variable_returns_the_value(
        self, session: aiohttp.ClientSession, fake_ari: FakeAri
    ) -> None:
        """get_variable returns the 'value' of Asterisk's answer."""
        fake_ari.reply("GET", "/channels/1.1/variable", 200, {"value": "Jakarta Pusat"})
        value = await _client(session, fake_ari).get_variable("1.1", "CALLERID(name)")
        assert value == "Jakarta Pusat"
        assert fake_ari.requests[-1].query == {"variable": "CALLERID(name)"}

    async def test_generic_request_returns_json_or_none(
        self, session: aiohttp.ClientSession, fake_ari: FakeAri
    ) -> None:
        """request() returns decoded JSON for a body and None for an empty 204."""
        fake_ari.reply("GET", "/asterisk/info", 200, {"system": {"version": "22.10.1"}})
        fake_ari.reply("POST", "/channels/1.1/answer", 204)
        client = _client(session, fake_ari)
        assert await client.request("GET", "/asterisk/info") == {"system": {"version": "22.10.1"}}
        assert await client.request("POST", "/channels/1.1/answer") is None

    async def test_subscribe_and_get_endpoint(
        self, session: aiohttp.ClientSession, fake_ari: FakeAri
    ) -> None:
        """subscribe sends eventSource; get_endpoint GETs /endpoints/{tech}/{resource}."""
        application = {
            "name": "siaga112",
            "channel_ids": [],
            "bridge_ids": [],
            "endpoint_ids": ["PJSIP/1001"],
            "device_names": [],
        }
        endpoint = {"technology": "PJSIP", "resource": "1001", "channel_ids": ["1.1"]}
        fake_ari.reply("POST", "/applications/siaga112/subscription", 200, application)
        fake_ari.reply("GET", "/endpoints/PJSIP/1001", 200, endpoint)
        client = _client(session, fake_ari)
        app = await client.subscribe("siaga112", ["endpoint:PJSIP/1001", "deviceState:Custom:x"])
        got = await client.get_endpoint("PJSIP", "1001")
        assert app.endpoint_ids == ("PJSIP/1001",)
        assert (got.resource, got.state, got.channel_ids) == ("1001", None, ("1.1",))
        assert fake_ari.requests[0].query == {
            "eventSource": "endpoint:PJSIP/1001,deviceState:Custom:x"
        }


class TestInvalidArguments:
    @pytest.mark.parametrize("bad_id", ["", "../bridges", "a/b", "a?b=1", "a b", ".", "x\n"])
    async def test_unsafe_ids_are_refused_before_any_request(
        self, session: aiohttp.ClientSession, fake_ari: FakeAri, bad_id: str
    ) -> None:
        """An id that could alter the URL path raises InvalidArgument and sends nothing."""
        with pytest.raises(ari.InvalidArgument, match="not a valid ARI id"):
            await _client(session, fake_ari).hangup(bad_id)
        assert fake_ari.requests == []

    async def test_list_items_with_commas_are_refused(
        self, session: aiohttp.ClientSession, fake_ari: FakeAri
    ) -> None:
        """A Stasis argument containing a comma cannot be sent and raises InvalidArgument."""
        with pytest.raises(ari.InvalidArgument, match="without commas"):
            await _client(session, fake_ari).originate(
                "PJSIP/1001", channel_id="siaga-offer-1.1-1", app="siaga112", app_args=["a,b"]
            )
        assert fake_ari.requests == []

    async def test_generic_request_refuses_a_query_in_the_path(
        self, session: aiohttp.ClientSession, fake_ari: FakeAri
    ) -> None:
        """request() refuses a path with a query string; parameters go through params."""
        with pytest.raises(ari.InvalidArgument, match="without query"):
            await _client(session, fake_ari).request("GET", "/channels?x=1")
        assert fake_ari.requests == []

    def test_credentials_inside_the_url_are_refused(self, session: aiohttp.ClientSession) -> None:
        """A base URL carrying user:password is refused so the password is never logged."""
        with pytest.raises(ari.InvalidArgument, match="not inside the URL"):
            AriRest(session, "http://u:p@127.0.0.1:8088/ari", "u", "p")


class TestErrors:
    @pytest.mark.parametrize(
        ("status", "error_class", "message"),
        [
            (400, ari.AriBadRequest, "Invalid direction"),
            (404, ari.AriNotFound, "Channel not found"),
            (409, ari.AriConflict, "Channel not in Stasis application"),
            (412, ari.AriPreconditionFailed, "Channel in invalid state"),
            (422, ari.AriUnprocessable, "Bridge not found"),
            (500, ari.AriServerError, "Internal Server Error"),
            (503, ari.AriServerError, "Service Unavailable"),
        ],
    )
    async def test_status_maps_to_exception_with_method_path_and_message(
        self,
        session: aiohttp.ClientSession,
        fake_ari: FakeAri,
        status: int,
        error_class: type[ari.AriError],
        message: str,
    ) -> None:
        """Each error status becomes its exception carrying method, path, status and message."""
        fake_ari.reply("POST", "/channels/1.1/answer", status, {"message": message})
        with pytest.raises(error_class) as info:
            await _client(session, fake_ari).answer("1.1")
        error = info.value
        assert isinstance(error, ari.AriError)
        assert (error.method, error.path, error.status, error.message) == (
            "POST",
            "/channels/1.1/answer",
            status,
            message,
        )
        assert str(error) == f"ARI POST /channels/1.1/answer failed (HTTP {status}): {message}"

    async def test_wrong_password_is_an_auth_error_that_never_shows_the_password(
        self, session: aiohttp.ClientSession, fake_ari: FakeAri
    ) -> None:
        """401 becomes AriAuthError; neither the error, the repr nor the logs show the password."""
        client = _client(session, fake_ari, password="wrong-pw-123")
        with capture_logs() as logs, pytest.raises(ari.AriAuthError) as info:
            await client.get_channel("1.1")
        assert info.value.status == 401
        assert info.value.message == "Authentication required"
        for text in (str(info.value), repr(info.value), repr(client), repr(logs)):
            assert "wrong-pw-123" not in text

    async def test_404_without_json_body_keeps_the_text(
        self, session: aiohttp.ClientSession, fake_ari: FakeAri
    ) -> None:
        """A non-JSON error body becomes the message, with control characters escaped."""
        fake_ari.reply("GET", "/bridges/b1", 404, b"no such\x1b bridge")
        with pytest.raises(ari.AriNotFound) as info:
            await _client(session, fake_ari).get_bridge("b1")
        assert info.value.message == "no such\\x1b bridge"

    async def test_unreadable_success_body_is_a_bad_response(
        self, session: aiohttp.ClientSession, fake_ari: FakeAri
    ) -> None:
        """A 200 whose body is not a Channel raises AriBadResponse naming the model."""
        fake_ari.reply("GET", "/channels/1.1", 200, {"id": "1.1"})
        with pytest.raises(ari.AriBadResponse, match="not a valid Channel"):
            await _client(session, fake_ari).get_channel("1.1")

    async def test_connection_refused_is_unavailable(self, session: aiohttp.ClientSession) -> None:
        """A refused connection raises AriUnavailable saying Asterisk is unreachable at the URL."""
        url = f"http://127.0.0.1:{_free_port()}/ari"
        client = AriRest(session, url, USERNAME, PASSWORD)
        with pytest.raises(ari.AriUnavailable) as info:
            await client.answer("1.1")
        assert info.value.status is None
        assert (info.value.method, info.value.path) == ("POST", "/channels/1.1/answer")
        assert f"Asterisk is unreachable at {url}" in str(info.value)

    async def test_timeout_is_unavailable(
        self, session: aiohttp.ClientSession, fake_ari: FakeAri
    ) -> None:
        """No answer within the per-request timeout raises AriUnavailable naming the timeout."""
        fake_ari.delay_s = 1.0
        fake_ari.reply("GET", "/channels", 200, [])
        with pytest.raises(ari.AriUnavailable, match=r"no answer within 0\.2 s"):
            await _client(session, fake_ari, timeout_s=0.2).list_channels()
