"""Hostile input and security defaults, on real Asterisk 22, sipp and PostgreSQL.

Callers send quotes, SQL, path characters, control characters, 2 KB names,
invalid UTF-8 and malformed P-Asserted-Identity; the API gets junk. Nothing
crashes, everything is stored safely, and every service log line stays one
JSON object. Handsets need digest auth, only the trunk's address reaches the
emergency context, production refuses lab credentials, and no secret is logged.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from harness import TONE_A_HZ, AsteriskInstance, SippProcess, SippRunner, make_tone
from harness.checks import db_rows, wait_clean, wait_rows
from harness.service import TOKEN, ServiceFactory, ServiceProcess, free_port
from harness.sipp import SCENARIO_DIR, _tracing, sipp_binary
from siaga_pbx.callerid import MAX_RAW_HEADER
from siaga_pbx.config import Settings

SAFE_NUMBER = set("0123456789+*#")

# (from_user, from_name, pai) per caller; from_user is unique so rows can be matched.
HOSTILE_CALLERS: list[tuple[str, str, str | None]] = [
    ("0811100001", "Robert'); DROP TABLE calls; --", None),
    ("0811100002", "A" * 2048, None),
    ("0811100003", "\x01\x07\x1b[2J\x7fbell", None),
    ("0811100004", "BADUTF8", None),  # replaced by raw bytes FF FE C3 in the scenario
    ("0811100005", '{"event": "forged", "level": "critical"}', None),
    ("0811100006", "path", "sip:../../etc/passwd;%00@op.example"),
    ("0811100007", "pai", '"unterminated <sip:;;@@>'),
    ("0811100008", "\u202etxt.exe \u2028 \ufeff", "tel:+62-811-100-008;;;"),
    ("0811100009'--", "quote in number", None),
    # ")" then ":" would be a ${var:offset} substring if Asterisk re-parsed the header
    ("0811100010", "a) b:1:2 (c %28 %", "tel:+62811100010;x=)(:"),
    ("0811100011", "H" * 6000, None),  # a huge header: bounded, never a failure
]
RAW_NAME = b"Bad \xff\xfe\xc3 name"  # what _raw_bytes_caller puts on the wire


def _assert_raw_headers_kept(svc: ServiceProcess, rows: list[dict[str, Any]]) -> None:
    """Each call's From / PAI header bytes are stored exactly beside the cleaned text,
    and the incident API returns them base64."""
    by_number = {r["caller_number"]: r for r in rows}
    sent = {user: name.encode() for user, name, _ in HOSTILE_CALLERS} | {"0811100004": RAW_NAME}
    for user, name in sent.items():
        row = by_number.get(user)
        if row is None or len(name) > 4096:
            continue  # a message Asterisk refused (counted by the caller), or too big
        assert row["from_header_raw"] is not None, (user, row["caller_name"][:80])
        raw = bytes(row["from_header_raw"])
        assert len(raw) <= MAX_RAW_HEADER, user
        # whole (2 KB included): the quoted name, then the URI with the caller's number
        assert raw.startswith(b'"' + name + b'" <sip:' + user.encode() + b"@"), (user, raw)
    # the invalid UTF-8 and the control characters reached the record byte for byte
    assert RAW_NAME in bytes(by_number["0811100004"]["from_header_raw"])
    assert "\ufffd" in by_number["0811100004"]["caller_name"]
    assert b"\x01\x07\x1b[2J\x7fbell" in bytes(by_number["0811100003"]["from_header_raw"])
    assert bytes(by_number["0811100010"]["pai_header_raw"]).startswith(b"<tel:+62811100010;x=)(:")
    assert by_number["0811100001"]["pai_header_raw"] is None  # no PAI sent
    # Over 4 KB PJSIP_HEADER cannot read the header: nothing captured, the call unharmed.
    assert by_number["0811100011"]["from_header_raw"] is None
    for user in ("0811100003", "0811100004", "0811100010"):
        row = by_number[user]
        got = svc.get(f"/api/incidents/{row['incident_id']}")
        (call,) = got["calls"]
        assert base64.b64decode(call["from_header_b64"]) == bytes(row["from_header_raw"])
        assert call["caller_name"] == row["caller_name"]
        if row["pai_header_raw"] is not None:
            assert base64.b64decode(call["pai_header_b64"]) == bytes(row["pai_header_raw"])


def _request(
    svc: ServiceProcess,
    method: str,
    path: str,
    body: bytes | None = None,
    token: str | None = TOKEN,
) -> int:
    req = urllib.request.Request(svc.url + path, data=body, method=method)
    if token is not None:
        req.add_header("Authorization", f"Bearer {token}")
    req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


def _log_objects(svc: ServiceProcess) -> list[dict[str, Any]]:
    lines = svc.log_path.read_text(encoding="utf-8", errors="strict").splitlines()
    out = []
    for line in lines:
        obj = json.loads(line)  # raises if a line is not exactly one JSON object
        assert isinstance(obj, dict), line
        out.append(obj)
    return out


def _register(sipp: SippRunner, user: str, password: str, tmp_path: Path) -> SippProcess:
    """A handset REGISTER with digest credentials, expecting 200 (sipp fails otherwise)."""
    scenario = tmp_path / "register.xml"
    scenario.write_text(
        """<?xml version="1.0" encoding="UTF-8"?>
<scenario name="register">
  <Global variables="user"/>
  <send retrans="500"><![CDATA[
REGISTER sip:[remote_ip]:[remote_port] SIP/2.0
Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
From: <sip:[$user]@[remote_ip]>;tag=[pid]Reg[call_number]
To: <sip:[$user]@[remote_ip]>
Call-ID: [call_id]
CSeq: 1 REGISTER
Contact: <sip:[$user]@[local_ip]:[local_port]>
Expires: 60
Max-Forwards: 70
Content-Length: 0

]]></send>
  <recv response="401" auth="true"/>
  <send retrans="500"><![CDATA[
REGISTER sip:[remote_ip]:[remote_port] SIP/2.0
Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
From: <sip:[$user]@[remote_ip]>;tag=[pid]Reg[call_number]
To: <sip:[$user]@[remote_ip]>
Call-ID: [call_id]
CSeq: 2 REGISTER
Contact: <sip:[$user]@[local_ip]:[local_port]>
[authentication]
Expires: 60
Max-Forwards: 70
Content-Length: 0

]]></send>
  <recv response="200"/>
</scenario>
""",
        encoding="utf-8",
    )
    wd = tmp_path / f"register-{user}"
    args = [
        sipp_binary(),
        "-sf",
        str(scenario),
        "-i",
        "127.0.0.1",
        "-p",
        "5299",
        "-m",
        "1",
        "-au",
        user,
        "-ap",
        password,
        "-set",
        "user",
        user,
        "-timeout",
        "15s",
        "-timeout_error",
        *_tracing(),
        sipp.instance.sip_target,
    ]
    proc = SippProcess(f"register-{user}", args, wd, 15).start()
    sipp.processes.append(proc)
    return proc


def _raw_bytes_caller(sipp: SippRunner, from_user: str) -> SippProcess:
    """One caller whose From display name holds invalid UTF-8 (bytes FF FE C3) on the wire."""
    wd = sipp.workdir / "raw-bytes"
    wd.mkdir(parents=True, exist_ok=True)
    make_tone(wd / "tone.ulaw", TONE_A_HZ, seconds=5)
    scenario = wd / "caller-raw.xml"
    xml = (SCENARIO_DIR / "caller.xml").read_bytes()
    # Only in the From headers: the scenario's log line still uses the variable
    # (sipp refuses to run a scenario with a declared variable never used).
    scenario.write_bytes(xml.replace(b'From: "[$from_name]"', b'From: "' + RAW_NAME + b'"'))
    inst = sipp.instance
    args = [
        sipp_binary(),
        "-sf",
        str(scenario),
        "-i",
        inst.trunk_addr,
        "-p",
        str(free_port()),
        "-mi",
        inst.trunk_addr,
        "-mp",
        str(free_port()),
        "-m",
        "1",
        "-s",
        "112",
        "-set",
        "from_user",
        from_user,
        "-set",
        "from_name",
        "unused",
        "-set",
        "pai_header",
        "X-Siaga-No-PAI: 1",
        "-set",
        "talk_ticks",
        "25",
        "-set",
        "hangup",
        "bye",
        "-timeout",
        "30s",
        "-timeout_error",
        *_tracing(),
        inst.sip_target,
    ]
    proc = SippProcess("raw-bytes", args, wd, 30).start()
    sipp.processes.append(proc)
    return proc


class TestHostileCallers:
    def test_hostile_caller_ids_are_stored_safely_and_logged_as_json(
        self,
        service: ServiceFactory,
        sipp: SippRunner,
        asterisk_instance: AsteriskInstance,
        e2e_dsn: str,
    ) -> None:
        """Quotes, SQL, control chars, 2 KB, bad UTF-8, bad PAI: stored safely, logs intact."""
        svc = service()
        callers = [
            sipp.caller(
                from_user=user, from_name=name, pai=pai, talk_s=2.5, name=f"h{i}", timeout_s=30
            )
            for i, (user, name, pai) in enumerate(HOSTILE_CALLERS)
            if name != "BADUTF8"
        ]
        callers.append(_raw_bytes_caller(sipp, "0811100004"))
        results = [c.wait() for c in callers]
        answered = [r for r in results if r.ok]
        assert results[-1].ok, results[-1].describe()  # the invalid UTF-8 caller got through
        # Asterisk may refuse a message it cannot parse; every call it took reached us.
        assert len(answered) >= len(HOSTILE_CALLERS) - 2, [r.describe() for r in results]
        rows = wait_rows(
            e2e_dsn,
            "SELECT * FROM calls WHERE ended_at IS NOT NULL",
            until=lambda r: len(r) >= len(answered),
            timeout=20,
        )
        assert len(rows) == len(answered)
        assert len({r["call_id"] for r in rows}) == len(rows)
        for row in rows:
            for col in ("caller_number", "pai"):
                assert set(row[col] or "") <= SAFE_NUMBER, row
            name = row["caller_name"] or ""
            assert all(ch.isprintable() or ch == " " for ch in name), repr(name)
            assert len(name) <= 2048
        names = {r["caller_number"]: r["caller_name"] for r in rows}
        assert names.get("0811100001") == "Robert'); DROP TABLE calls; --"
        assert db_rows(e2e_dsn, "SELECT count(*) AS n FROM calls")[0]["n"] == len(rows)
        assert len(names.get("0811100002", "")) >= 1000  # the long name kept (capped, not lost)
        _assert_raw_headers_kept(svc, rows)
        objects = _log_objects(svc)
        assert not [o for o in objects if o.get("event") == "forged"]
        assert svc.health()["ari_connected"]
        wait_clean(asterisk_instance)

    def test_bad_api_payloads_get_4xx_never_500(self, service: ServiceFactory) -> None:
        """Junk JSON, wrong types, huge and hostile values, bad ids and tokens: 4xx, service up."""
        svc = service()
        cases: list[tuple[str, str, bytes | None, str | None]] = [
            ("POST", "/api/takers/taker1/pause", b"not json", TOKEN),
            ("POST", "/api/takers/taker1/pause", b'{"reason": "' + b"x" * 100_000 + b'"}', TOKEN),
            ("POST", "/api/takers/taker1/pause", b'{"reason": "\'; DROP TABLE x;--"}', TOKEN),
            ("POST", "/api/takers/taker1/pause", b"\xff\xfe\x00", TOKEN),
            ("POST", "/api/takers/..%2F..%2Fetc/pause", b"{}", TOKEN),
            ("POST", "/api/takers/taker1/explode", b"{}", TOKEN),
            ("PUT", "/api/queues", b"[" * 5000 + b"]" * 5000, TOKEN),
            ("PUT", "/api/queues", b'{"queues": "nope"}', TOKEN),
            ("PUT", "/api/queues", b'[{"name": "../x", "ring_timeout_s": -1}]', TOKEN),
            ("GET", "/api/incidents?limit=-5&cursor=%00%ff", None, TOKEN),
            ("GET", "/api/incidents/not-a-uuid", None, TOKEN),
            ("PATCH", "/api/incidents/00000000-0000-0000-0000-000000000000", b"[]", TOKEN),
            ("POST", "/api/callbacks/..%2F/resolve", b"{}", TOKEN),
            (
                "POST",
                "/api/callbacks/x/resolve",
                b'{"resolution": "' + b"x" * 100_000 + b'"}',
                TOKEN,
            ),
            (
                "POST",
                "/api/callbacks/x/resolve",
                b'{"resolution": "not_needed", "by": "me"}',
                TOKEN,
            ),
            ("POST", "/api/calls/nope/dispatchers", b'{"agency": 1}', TOKEN),
            ("GET", "/api/state", None, None),
            ("GET", "/api/state", None, "wrong-token"),
            ("GET", "/api/state", None, "e2e-admin-token\tX-Evil: 1"),
        ]
        for method, path, body, token in cases:
            status = _request(svc, method, path, body, token)
            assert 400 <= status < 500, (method, path, status)
        assert svc.health()["status"] == "ok"
        assert _log_objects(svc)


class TestSecurityDefaults:
    def test_production_refuses_lab_credentials(self, tmp_path: Path) -> None:
        """SIAGA_PROFILE=production with lab defaults: `run` exits non-zero and says why."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("SIAGA_")}
        env |= {"SIAGA_PROFILE": "production", "SIAGA_STATE_DIR": str(tmp_path)}
        proc = subprocess.run(
            [sys.executable, "-m", "siaga_pbx", "run"],
            env=env,
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        assert proc.returncode != 0
        assert "lab default" in proc.stderr, proc.stderr
        env |= {"SIAGA_ARI__PASSWORD": "a-real-secret-123", "SIAGA_HTTP__TOKENS": "{}"}
        env["SIAGA_HTTP__TOKENS"] = json.dumps({"lab-admin-token": "admin"})
        proc = subprocess.run(
            [sys.executable, "-m", "siaga_pbx", "run"],
            env=env,
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        assert proc.returncode != 0
        assert "lab admin token" in proc.stderr, proc.stderr

    def test_lab_binds_loopback_and_never_logs_secrets(
        self,
        service: ServiceFactory,
        sipp: SippRunner,
        asterisk_instance: AsteriskInstance,
    ) -> None:
        """HTTP and ARI listen on loopback only; the ARI password and API token are never logged."""
        defaults = Settings()
        assert defaults.http.host == "127.0.0.1"
        assert defaults.ari.url.startswith("http://127.0.0.1:")
        svc = service()
        listening = subprocess.run(
            ["ss", "-H", "-ltn"], capture_output=True, text=True, check=True
        ).stdout.split()
        ari_port = asterisk_instance.ari_url.rsplit(":", 1)[1]
        assert f"127.0.0.1:{svc.port}" in listening
        assert f"127.0.0.1:{ari_port}" in listening
        assert f"0.0.0.0:{svc.port}" not in listening and f"*:{svc.port}" not in listening
        assert f"0.0.0.0:{ari_port}" not in listening
        svc.get("/api/state")  # an authenticated request, which must not be logged verbatim
        caller = sipp.caller(talk_s=1.5, timeout_s=20)
        caller.wait()
        time.sleep(0.5)
        text = svc.log_path.read_text(errors="replace")
        assert asterisk_instance.ari_password not in text
        assert TOKEN not in text
        assert "service.started" in text


class TestSipAccess:
    def test_wrong_digest_password_is_refused(
        self, service: ServiceFactory, sipp: SippRunner, tmp_path: Path
    ) -> None:
        """A handset's REGISTER and INVITE with a wrong password are refused (401/403)."""
        service()
        reg = _register(sipp, "taker2", "wrong-password", tmp_path).wait()
        assert not reg.ok, reg.describe()
        refused = reg.received("SIP/2.0 401") + reg.received("SIP/2.0 403")
        assert len(refused) >= 2, reg.describe()
        good = _register(sipp, "taker2", sipp.instance.values["SECRET_TAKER2"], tmp_path).wait()
        good.assert_ok()  # the same scenario with the right password registers
        invite = sipp.feature("*13", user="taker3", password="wrong-password").wait()
        assert not invite.ok, invite.describe()
        refused = invite.received("SIP/2.0 401") + invite.received("SIP/2.0 403")
        assert len(refused) >= 2, invite.describe()

    def test_invite_from_a_non_trunk_address_does_not_reach_the_emergency_context(
        self,
        service: ServiceFactory,
        sipp: SippRunner,
        asterisk_instance: AsteriskInstance,
        e2e_dsn: str,
    ) -> None:
        """An unauthenticated INVITE to 112 from an address other than the trunk's is refused."""
        svc = service()
        rogue = sipp.caller(source="127.0.0.3", from_user="0811999999", timeout_s=15).wait()
        assert not rogue.ok, rogue.describe()
        assert rogue.received("SIP/2.0 401") or rogue.received("SIP/2.0 403"), rogue.describe()
        assert not rogue.received("SIP/2.0 200"), rogue.describe()
        time.sleep(1.0)
        assert db_rows(e2e_dsn, "SELECT call_id FROM calls") == []
        assert not [o for o in _log_objects(svc) if o.get("core_event") == "CallerArrived"]
        wait_clean(asterisk_instance)
