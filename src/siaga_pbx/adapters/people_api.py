"""HTTP routes for people: sign-in, users, personal API tokens (docs/PEOPLE.md).

| route                          | who                                          |
| ------------------------------ | -------------------------------------------- |
| POST   /api/session            | anyone (username + password; throttled)      |
| GET    /api/session            | anyone authenticated: who am I, CSRF token   |
| DELETE /api/session            | the signed-in browser (CSRF token required)  |
| GET    /api/users[/{username}] | admin                                        |
| POST   /api/users              | admin                                        |
| PATCH  /api/users/{username}   | admin (``version`` required: stale -> 409)   |
| DELETE /api/users/{username}   | admin: disables (users are never deleted)    |
| GET    /api/tokens             | a person: theirs; admin: anyone's            |
| POST   /api/tokens             | a person for themselves; admin for anyone    |
| DELETE /api/tokens/{id}        | the token's owner, or admin                  |

Writes to users and tokens need PostgreSQL (503 while it is down); sign-in,
sign-out and every authenticated request do not.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from typing import Any, Literal

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .. import auth
from ..people import (
    ApiToken,
    DirectoryUnavailable,
    InvalidUser,
    NoSuchUser,
    PasswordPolicyError,
    People,
    SignInRefused,
    StaleVersion,
    UsernameTaken,
    allowed,
    csrf_token,
)
from .http import error, read_json, validation_error

__all__ = ["add_people_routes"]

PersonRole = Literal["admin", "supervisor", "call_taker", "dispatcher", "ops"]
_ANYONE = ("admin", "supervisor", "call_taker", "dispatcher", "ops")
_PEOPLE: web.AppKey[People] = web.AppKey("people", People)

_Handler = Callable[[web.Request, auth.Caller], Awaitable[web.StreamResponse]]


class SignInBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    username: str = Field(min_length=1, max_length=64)
    password: str = Field(min_length=1, max_length=256)


class UserCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    username: str = Field(min_length=2, max_length=64)
    display_name: str = Field(min_length=1, max_length=128)
    roles: list[PersonRole] = Field(min_length=1)
    password: str
    enabled: bool = True
    taker_id: str | None = None
    handset: str | None = None
    agency: str | None = None


class UserPatch(BaseModel):
    model_config = ConfigDict(extra="forbid")
    version: int = Field(ge=1)
    display_name: str | None = Field(None, min_length=1, max_length=128)
    roles: list[PersonRole] | None = Field(None, min_length=1)
    enabled: bool | None = None
    taker_id: str | None = None
    handset: str | None = None
    agency: str | None = None
    password: str | None = None


class TokenCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=100)
    username: str | None = Field(None, max_length=64)  # for someone else: admin only
    roles: list[PersonRole] = Field(default_factory=list)  # empty: all the owner's roles
    expires_in_days: int | None = Field(None, ge=1, le=3650)


def add_people_routes(app: web.Application, people: People) -> None:
    auth.install_people(app, people)
    app[_PEOPLE] = people
    app.router.add_post("/api/session", sign_in)
    app.router.add_get("/api/session", _guard(_ANYONE, who_am_i))
    app.router.add_delete("/api/session", sign_out)
    app.router.add_get("/api/users", _guard(("admin",), list_users))
    app.router.add_post("/api/users", _guard(("admin",), create_user))
    app.router.add_get("/api/users/{username}", _guard(("admin",), get_user))
    app.router.add_patch("/api/users/{username}", _guard(("admin",), patch_user))
    app.router.add_delete("/api/users/{username}", _guard(("admin",), disable_user))
    app.router.add_get("/api/tokens", _guard(_ANYONE, list_tokens))
    app.router.add_post("/api/tokens", _guard(_ANYONE, create_token))
    app.router.add_delete("/api/tokens/{token_id}", _guard(_ANYONE, revoke_token))


def _guard(roles: tuple[str, ...], handler: _Handler) -> Callable[[web.Request], Any]:
    async def guarded(request: web.Request) -> web.StreamResponse:
        try:
            caller = auth.authorize(request, roles)
        except auth.AuthError as exc:
            response = error(exc.status, exc.message)
            response.headers.update(exc.headers)
            return response
        try:
            return await handler(request, caller)
        except DirectoryUnavailable as exc:
            return error(503, f"{exc}; try again later", None)

    return guarded


def _source(request: web.Request) -> str:
    # The peer address; a reverse proxy in front would make this the proxy's
    # (see docs/PEOPLE.md: X-Forwarded-For is not trusted).
    return request.remote or "unknown"


# ---- sessions -------------------------------------------------------------------


async def sign_in(request: web.Request) -> web.StreamResponse:
    if request.content_type != "application/json":
        # A form post from another site cannot send JSON without CORS asking first.
        return error(415, "send the username and password as application/json")
    try:
        body = SignInBody.model_validate(await read_json(request))
    except ValidationError as exc:
        return validation_error(exc)
    people = request.app[_PEOPLE]
    try:
        signed = await people.sign_in(body.username, body.password, _source(request))
    except SignInRefused as exc:
        response = error(exc.status, exc.message)
        if exc.retry_after_s:
            response.headers["Retry-After"] = str(int(exc.retry_after_s) + 1)
        return response
    response = web.json_response(
        {
            **_me(signed.user.public()),
            "csrf_token": signed.csrf_token,
            "expires_at": signed.expires_at,
        },
        status=201,
    )
    response.set_cookie(
        auth.SESSION_COOKIE,
        signed.secret,
        path="/",
        httponly=True,
        samesite="Strict",
        secure=people.cookie_secure,
    )
    return response


def _me(user: dict[str, Any]) -> dict[str, Any]:
    return {k: user[k] for k in ("user_id", "username", "display_name", "roles", "taker_id")} | {
        "agency": user["agency"]
    }


async def who_am_i(request: web.Request, caller: auth.Caller) -> web.StreamResponse:
    body: dict[str, Any] = {
        "user_id": caller.user_id or None,
        "username": caller.username or None,
        "display_name": caller.display_name or None,
        "role": auth.canonical_role(caller.role),
        "roles": sorted(caller.roles),
        "taker_id": caller.taker_id or None,
        "agency": caller.agency or None,
        "via": caller.via,
    }
    if caller.via == "session":
        secret = request.cookies[auth.SESSION_COOKIE]
        body["csrf_token"] = csrf_token(secret)
        body["expires_at"] = request.app[_PEOPLE].session_expiry(secret)
    return web.json_response(body)


async def sign_out(request: web.Request) -> web.StreamResponse:
    secret = request.cookies.get(auth.SESSION_COOKIE, "")
    if not secret:
        return error(401, "not signed in")
    people = request.app[_PEOPLE]
    if people.by_session(secret) is not None:
        try:
            auth.authenticate(request)  # the CSRF token, as for any change
        except auth.AuthError as exc:
            return error(exc.status, exc.message)
        await people.sign_out(secret, _source(request))
    response = web.Response(status=204)
    response.del_cookie(auth.SESSION_COOKIE, path="/")
    return response


# ---- users ----------------------------------------------------------------------


async def list_users(request: web.Request, caller: auth.Caller) -> web.StreamResponse:
    return web.json_response({"users": [u.public() for u in request.app[_PEOPLE].users()]})


async def get_user(request: web.Request, caller: auth.Caller) -> web.StreamResponse:
    user = request.app[_PEOPLE].user(request.match_info["username"])
    if user is None:
        return error(404, "no such user")
    return web.json_response(user.public())


async def create_user(request: web.Request, caller: auth.Caller) -> web.StreamResponse:
    try:
        body = UserCreate.model_validate(await read_json(request))
    except ValidationError as exc:
        return validation_error(exc)
    fields = body.model_dump(exclude={"password"})
    try:
        user = await request.app[_PEOPLE].create_user(fields, body.password)
    except InvalidUser as exc:
        return error(422, "invalid user", {exc.field: exc.message})
    except PasswordPolicyError as exc:
        return error(422, "invalid user", {"password": str(exc)})
    except UsernameTaken:
        return error(409, f"username {body.username!r} is taken")
    return web.json_response(user.public(), status=201)


async def patch_user(request: web.Request, caller: auth.Caller) -> web.StreamResponse:
    try:
        body = UserPatch.model_validate(await read_json(request))
    except ValidationError as exc:
        return validation_error(exc)
    changes = body.model_dump(exclude={"version", "password"}, exclude_unset=True)
    username = request.match_info["username"]
    if username == caller.username and changes.get("enabled") is False:
        return error(409, "an admin cannot disable themselves; ask another admin")
    return await _update(request, username, body.version, changes, body.password)


async def disable_user(request: web.Request, caller: auth.Caller) -> web.StreamResponse:
    username = request.match_info["username"]
    if username == caller.username:
        return error(409, "an admin cannot disable themselves; ask another admin")
    user = request.app[_PEOPLE].user(username)
    if user is None:
        return error(404, "no such user")
    if not user.enabled:
        return web.json_response(user.public())
    return await _update(request, username, user.version, {"enabled": False}, None)


async def _update(
    request: web.Request, username: str, version: int, changes: dict[str, Any], pw: str | None
) -> web.StreamResponse:
    try:
        user = await request.app[_PEOPLE].update_user(username, version, changes, pw)
    except NoSuchUser:
        return error(404, "no such user")
    except StaleVersion as exc:
        return error(409, f"{exc}; read it again and retry", {"version": str(exc.current)})
    except InvalidUser as exc:
        return error(422, "invalid user", {exc.field: exc.message})
    except PasswordPolicyError as exc:
        return error(422, "invalid user", {"password": str(exc)})
    return web.json_response(user.public())


# ---- tokens ---------------------------------------------------------------------


async def list_tokens(request: web.Request, caller: auth.Caller) -> web.StreamResponse:
    people = request.app[_PEOPLE]
    wanted = request.query.get("username", caller.username)
    if wanted and not allowed(caller, "tokens.manage", wanted):
        return error(403, "only an admin sees another person's tokens")
    if not wanted and not allowed(caller, "users.manage"):
        return error(403, "a configuration token owns no tokens")
    owner = people.user(wanted) if wanted else None
    if wanted and owner is None:
        return error(404, "no such user")
    tokens = await people.all_tokens(owner.user_id if owner else None)
    return web.json_response({"tokens": [_token_json(people, t) for t in tokens]})


def _token_json(people: People, t: ApiToken) -> dict[str, Any]:
    owner = people.user_by_id(t.user_id)
    return t.public(owner.username if owner else "")


async def create_token(request: web.Request, caller: auth.Caller) -> web.StreamResponse:
    try:
        body = TokenCreate.model_validate(await read_json(request))
    except ValidationError as exc:
        return validation_error(exc)
    people = request.app[_PEOPLE]
    username = body.username or caller.username
    if not username:
        return error(422, "invalid token", {"username": "a configuration token must name one"})
    if not allowed(caller, "tokens.manage", username):
        return error(403, "only an admin makes tokens for someone else")
    owner = people.user(username)
    if owner is None or not owner.enabled:
        return error(404, "no such user (or disabled)")
    roles = tuple(dict.fromkeys(body.roles))
    if set(roles) - set(owner.roles):
        return error(422, "invalid token", {"roles": f"{username} holds only {list(owner.roles)}"})
    expires = (
        people.clock() + body.expires_in_days * 86400 if body.expires_in_days is not None else None
    )
    secret, token = await people.create_token(
        owner, name=body.name, roles=roles, expires_at=expires, created_by=caller.who
    )
    return web.json_response(
        {**token.public(owner.username), "token": secret, "note": "shown once: store it now"},
        status=201,
    )


async def revoke_token(request: web.Request, caller: auth.Caller) -> web.StreamResponse:
    people = request.app[_PEOPLE]
    token_id = request.match_info["token_id"]
    try:
        uuid.UUID(token_id)
    except ValueError:
        return error(404, "no such token")
    known = people.tokens.by_id(token_id)
    stored = known or next(
        (t for t in await people.all_tokens(None) if t.token_id == token_id), None
    )
    if stored is None:
        return error(404, "no such token")
    owner = people.user_by_id(stored.user_id)
    if not allowed(caller, "tokens.manage", owner.username if owner else None):
        # not yours: as good as unknown to you
        return error(404, "no such token")
    await people.revoke_token(token_id)
    return web.Response(status=204)
