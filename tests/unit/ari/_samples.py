"""Realistic ARI payloads, shaped like Asterisk 22's (with fields we do not model)."""

from __future__ import annotations

from typing import Any

TS = "2026-11-28T19:50:01.123+0700"


def channel(channel_id: str = "1732812345.12", **overrides: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "id": channel_id,
        "name": f"PJSIP/trunk-{channel_id}",
        "state": "Ring",
        "protocol_id": "abc@127.0.0.1",
        "caller": {"name": "Budi", "number": "081234567890"},
        "connected": {"name": "", "number": ""},
        "accountcode": "",
        "dialplan": {
            "context": "from-trunk",
            "exten": "112",
            "priority": 2,
            "app_name": "Stasis",
            "app_data": "siaga112,inbound",
        },
        "creationtime": TS,
        "language": "id",
        "tenantid": "",
    }
    data.update(overrides)
    return data


def bridge(bridge_id: str = "siaga-call-1732812345.12") -> dict[str, Any]:
    return {
        "id": bridge_id,
        "technology": "simple_bridge",
        "bridge_type": "mixing",
        "bridge_class": "stasis",
        "creator": "Stasis",
        "name": "call",
        "channels": ["1732812345.12"],
        "creationtime": TS,
        "video_mode": "none",
    }


def playback() -> dict[str, Any]:
    return {
        "id": "siaga-pb-1",
        "media_uri": "sound:siaga/welcome",
        "target_uri": "channel:1732812345.12",
        "language": "id",
        "state": "playing",
    }


def recording(state: str = "recording") -> dict[str, Any]:
    return {
        "name": "siaga-call-1732812345.12",
        "format": "wav",
        "target_uri": "bridge:siaga-call-1732812345.12",
        "state": state,
    }


def event(event_type: str, **fields: Any) -> dict[str, Any]:
    return {
        "type": event_type,
        "application": "siaga112",
        "timestamp": TS,
        "asterisk_id": "52:54:00:12:34:56",
        **fields,
    }


def stasis_start(channel_id: str = "1732812345.12", *args: str) -> dict[str, Any]:
    return event("StasisStart", args=list(args), channel=channel(channel_id))


# One well-formed example of every event type we model.
EVENTS: dict[str, dict[str, Any]] = {
    "StasisStart": event(
        "StasisStart", args=["inbound"], channel=channel(), replace_channel=channel("9.9")
    ),
    "StasisEnd": event("StasisEnd", channel=channel()),
    "ChannelStateChange": event("ChannelStateChange", channel=channel(state="Up")),
    "ChannelDestroyed": event(
        "ChannelDestroyed", cause=16, cause_txt="Normal Clearing", channel=channel()
    ),
    "ChannelHangupRequest": event("ChannelHangupRequest", cause=16, soft=True, channel=channel()),
    "ChannelDtmfReceived": event(
        "ChannelDtmfReceived", digit="5", duration_ms=120, channel=channel()
    ),
    "ChannelEnteredBridge": event("ChannelEnteredBridge", bridge=bridge(), channel=channel()),
    "ChannelLeftBridge": event("ChannelLeftBridge", bridge=bridge(), channel=channel()),
    "ChannelVarset": event("ChannelVarset", variable="SIAGA", value="1", channel=channel()),
    "ChannelCallerId": event(
        "ChannelCallerId",
        caller_presentation=0,
        caller_presentation_txt="Presentation Allowed, Not Screened",
        channel=channel(),
    ),
    "ChannelConnectedLine": event("ChannelConnectedLine", channel=channel()),
    "Dial": event("Dial", dialstatus="ANSWER", peer=channel("siaga-offer-1-1"), caller=channel()),
    "PlaybackStarted": event("PlaybackStarted", playback=playback()),
    "PlaybackFinished": event("PlaybackFinished", playback=playback()),
    "RecordingStarted": event("RecordingStarted", recording=recording()),
    "RecordingFinished": event("RecordingFinished", recording=recording("done")),
    "RecordingFailed": event("RecordingFailed", recording=recording("failed")),
    "EndpointStateChange": event(
        "EndpointStateChange",
        endpoint={"technology": "PJSIP", "resource": "1001", "state": "online", "channel_ids": []},
    ),
    "DeviceStateChanged": event(
        "DeviceStateChanged", device_state={"name": "PJSIP/1001", "state": "NOT_INUSE"}
    ),
    "ApplicationReplaced": event("ApplicationReplaced"),
    "BridgeCreated": event("BridgeCreated", bridge=bridge()),
    "BridgeDestroyed": event("BridgeDestroyed", bridge=bridge()),
}
