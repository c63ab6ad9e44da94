"""Named users through the real service process, with PostgreSQL stopped for real."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

from harness.pgserver import PrivatePostgres, private_pg
from harness.service import ServiceFactory, ServiceProcess
from pgtools import run_sync
from siaga_pbx.incidents import migrate

__all__ = ["private_pg"]  # the fixture, imported for this module


class Browser:
    """Just enough of a browser: keeps the session cookie, sends the CSRF token."""

    def __init__(self, svc: ServiceProcess) -> None:
        self.svc = svc
        self.cookie = ""
        self.csrf = ""

    def call(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.svc.url + path, data=data, method=method)
        req.add_header("Content-Type", "application/json")
        if self.cookie:
            req.add_header("Cookie", self.cookie)
        if self.csrf:
            req.add_header("X-CSRF-Token", self.csrf)
        try:
            with urllib.request.urlopen(req, timeout=10) as resp:
                set_cookie = resp.headers.get("Set-Cookie", "")
                if set_cookie:
                    self.cookie = set_cookie.split(";", 1)[0]
                return resp.status, json.loads(resp.read() or b"null")
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read() or b"null")

    def sign_in(self, username: str, password: str) -> int:
        status, body = self.call(
            "POST", "/api/session", {"username": username, "password": password}
        )
        if status == 201:
            self.csrf = body["csrf_token"]
        return status


def test_signed_in_users_keep_working_while_postgres_is_down(
    service: ServiceFactory, private_pg: PrivatePostgres
) -> None:
    """PostgreSQL stopped: a signed-in call taker keeps working, even across a
    service restart, and a user seen before can still sign in."""
    dsn = private_pg.dsn
    run_sync(lambda: migrate(dsn))
    svc = service(extra={"SIAGA_DATABASE_DSN": dsn})
    taker = Browser(svc)
    assert taker.sign_in("taker1", "taker1-lab") == 201  # the lab users were seeded
    assert taker.call("GET", "/api/session")[1]["taker_id"] == "taker1"

    private_pg.stop()
    status, snap = taker.call("GET", "/api/state")
    assert status == 200, snap
    status, body = taker.call("POST", "/api/takers/taker1/pause", {"reason": "break"})
    assert status == 202, body
    assert taker.call("POST", "/api/takers/taker2/pause", {"reason": "break"})[0] == 403
    supervisor = Browser(svc)
    assert supervisor.sign_in("supervisor", "supervisor-lab") == 201
    assert supervisor.sign_in("supervisor", "wrong-password") == 401
    # a change that must reach PostgreSQL says so, and nothing else breaks
    status, body = supervisor.call("POST", "/api/tokens", {"name": "script"})
    assert status == 503, body
    assert svc.health()["ari_connected"]

    assert svc.stop() == 0
    svc2 = service(extra={"SIAGA_DATABASE_DSN": dsn})
    taker.svc = svc2
    status, body = taker.call("POST", "/api/takers/taker1/unpause")
    assert status == 202, body  # the session survived the restart
    later = Browser(svc2)
    assert later.sign_in("taker2", "taker2-lab") == 201  # from the local copy
    lines = [line for line in svc2.log_lines() if str(line.get("event", "")).startswith("people.")]
    assert any(line["event"] == "people.database_unreachable" for line in lines), lines
    assert "taker2-lab" not in svc2.log_path.read_text()
