"""Real Asterisk 22 + sipp, no Python service: modules, ARI, the dialplan fallback, SDP."""

from __future__ import annotations

import dataclasses
import re
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from harness import AsteriskInstance, AsteriskProvisionError, SippResult, SippRunner

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]

REPO_ROOT = Path(__file__).resolve().parents[2]
DIALPLAN = REPO_ROOT / "dialplan" / "extensions.conf"

REQUIRED_MODULES = [
    "res_pjsip.so",
    "chan_pjsip.so",
    "res_pjsip_session.so",
    "res_pjsip_registrar.so",
    "res_pjsip_authenticator_digest.so",
    "res_pjsip_endpoint_identifier_ip.so",
    "res_pjsip_endpoint_identifier_user.so",
    "res_pjsip_caller_id.so",
    "res_pjsip_sdp_rtp.so",
    "res_pjsip_acl.so",
    "res_pjsip_header_funcs.so",
    "res_rtp_asterisk.so",
    "res_http_websocket.so",
    "res_ari.so",
    "res_ari_channels.so",
    "res_ari_bridges.so",
    "res_ari_recordings.so",
    "res_ari_playbacks.so",
    "res_ari_events.so",
    "res_stasis.so",
    "res_stasis_recording.so",
    "res_stasis_snoop.so",
    "app_stasis.so",
    "bridge_simple.so",
    "bridge_softmix.so",
    "bridge_native_rtp.so",
    "bridge_holding.so",
    "chan_bridge_media.so",
    "res_musiconhold.so",
    "app_playback.so",
    "app_dial.so",
    "app_mixmonitor.so",
    "app_record.so",
    "format_wav.so",
    "format_pcm.so",
    "format_gsm.so",
    "format_sln.so",
    "codec_ulaw.so",
    "codec_alaw.so",
    "codec_gsm.so",
    "pbx_config.so",
    "res_timing_timerfd.so",
    "res_sorcery_config.so",
    "res_sorcery_astdb.so",
]

CALLER_PAI = "sip:+6281234567890@operator.example"


def test_asterisk_starts_with_our_modules(asterisk_instance: AsteriskInstance) -> None:
    """Asterisk runs our modules.conf: every module we need is running and none failed to load."""
    shown = asterisk_instance.cli("module show")
    running = {
        line.split()[0]
        for line in shown.splitlines()
        if line.strip() and line.split()[0].endswith(".so") and "Running" in line
    }
    missing = [m for m in REQUIRED_MODULES if m not in running]
    assert not missing, f"modules not running: {missing}\n{shown}"
    load_errors = [
        line
        for line in asterisk_instance.console_log().splitlines()
        if "ERROR" in line and ("loader.c" in line or "Failed to load" in line)
    ]
    assert not load_errors, "module load errors:\n" + "\n".join(load_errors)
    assert len(running) < 150, f"{len(running)} modules loaded: autoload must stay off"


def test_ari_answers_with_our_credentials(asterisk_instance: AsteriskInstance) -> None:
    """GET /ari/asterisk/info answers with the profile's ARI user and reports Asterisk 22.x."""
    status, info = asterisk_instance.ari("GET", "asterisk/info")
    assert status == 200, info
    assert info["system"]["version"].startswith("22."), info["system"]
    assert info["config"]["default_language"] == "id"

    wrong = dataclasses.replace(asterisk_instance, ari_password="not-the-password")
    status, _ = wrong.ari("GET", "asterisk/info")
    assert status == 401


def test_dialplan_uses_only_loaded_applications(asterisk_instance: AsteriskInstance) -> None:
    """Every application our dialplan calls is loaded, so no 112 call dies on a missing app."""
    apps: set[str] = set()
    for line in DIALPLAN.read_text(encoding="utf-8").splitlines():
        m = re.match(r"\s*(exten|same)\s*=>\s*(.*)$", line)
        if not m:
            continue
        fields = m.group(2).split(",", 2 if m.group(1) == "exten" else 1)
        apps.add(fields[-1].split("(", 1)[0].strip())
        apps.update(re.findall(r"\?(\w+)\(", fields[-1]))  # ExecIf(cond?App(...))
    assert {"Stasis", "Dial", "MixMonitor", "Playback"} <= apps, apps
    missing = [app for app in sorted(apps) if not _app_loaded(asterisk_instance, app)]
    assert not missing, f"dialplan applications not loaded: {missing}"
    contexts = asterisk_instance.cli("dialplan show from-trunk")
    assert "siaga-emergency" in contexts


def _app_loaded(instance: AsteriskInstance, app: str) -> bool:
    try:
        out = instance.cli(f"core show application {app}")
    except AsteriskProvisionError:
        return False
    return f"Application '{app}'" in out


@dataclass
class FallbackCall:
    """One finished 112 call through the dialplan fallback."""

    caller: SippResult
    handset: SippResult
    new_recordings: list[Path]


@pytest.fixture(scope="module")
def fallback_call(
    asterisk_instance: AsteriskInstance, tmp_path_factory: pytest.TempPathFactory
) -> FallbackCall:
    """A 112 call from the trunk with no Stasis app connected, answered by taker1's handset."""
    status, apps = asterisk_instance.ari("GET", "applications")
    assert status == 200
    assert all(a["name"] != asterisk_instance.ari_app for a in apps), (
        "a Stasis app is connected: this test needs the dialplan fallback"
    )
    before = set(asterisk_instance.recording_dir.glob("siaga-fallback-*.wav"))
    runner = SippRunner(asterisk_instance, tmp_path_factory.mktemp("fallback"))
    try:
        handset = runner.handset(
            5071, name="taker1", ring_s=1.0, talk_s=3.0, hangup="bye", timeout_s=60
        )
        caller = runner.caller(
            pai=CALLER_PAI, from_name="Budi Santoso", hangup="wait", talk_s=60, timeout_s=60
        )
        caller_result = caller.wait()
        handset_result = handset.wait()
    finally:
        runner.stop_all()
    deadline = time.monotonic() + 5
    new: list[Path] = []
    while time.monotonic() < deadline:
        new = sorted(set(asterisk_instance.recording_dir.glob("siaga-fallback-*.wav")) - before)
        if new and new[0].stat().st_size > 44:
            break
        time.sleep(0.2)
    return FallbackCall(caller_result, handset_result, new)


def test_fallback_rings_takers_without_stasis_app(fallback_call: FallbackCall) -> None:
    """With no app on ARI, a trunk 112 call is answered by taker1 through the dialplan fallback."""
    fallback_call.caller.assert_ok()
    fallback_call.handset.assert_ok()
    assert fallback_call.handset.ended_by == ["local"], fallback_call.handset.describe()
    assert fallback_call.caller.ended_by == ["remote"], fallback_call.caller.describe()
    invites = fallback_call.handset.received("INVITE ")
    assert invites, fallback_call.handset.describe()
    assert "+6281234567890" in invites[0].split("\n\n", 1)[0], "caller ID from PAI not passed on"


def test_fallback_call_is_recorded(fallback_call: FallbackCall) -> None:
    """The fallback MixMonitor leaves a non-empty siaga-fallback-<uniqueid>.wav in the spool."""
    assert len(fallback_call.new_recordings) == 1, fallback_call.new_recordings
    assert fallback_call.new_recordings[0].stat().st_size > 8000


def test_sdp_to_handset_uses_loopback(fallback_call: FallbackCall) -> None:
    """Asterisk's INVITE to the handset offers media on 127.0.0.1, not the sandbox's 192.0.2.2."""
    invites = fallback_call.handset.received("INVITE ")
    assert invites, fallback_call.handset.describe()
    sdp = invites[0].split("\n\n", 1)[1]
    assert "c=IN IP4 127.0.0.1" in sdp, sdp
    assert "192.0.2.2" not in invites[0], invites[0]


def test_handset_busy_and_unanswered_variants(sipp: SippRunner) -> None:
    """The handset scenario's busy (486) and no-answer (180, CANCEL, 487) variants work."""
    busy = sipp.handset(5072, name="taker2-busy", mode="busy", timeout_s=60)
    ringing = sipp.handset(5073, name="taker3-noanswer", mode="noanswer", timeout_s=60)
    taker1 = sipp.handset(5071, name="taker1", ring_s=2.0, talk_s=2.0, hangup="bye", timeout_s=60)
    caller = sipp.caller(hangup="wait", talk_s=60, timeout_s=60)
    caller.wait().assert_ok()
    taker1.wait().assert_ok()
    busy_result = busy.wait(timeout_s=15)
    ringing_result = ringing.wait(timeout_s=15)
    busy_result.assert_ok()
    ringing_result.assert_ok()
    assert busy_result.ended_by == ["busy"]
    assert ringing_result.ended_by == ["cancel"]
