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
| DELETE /api/tokens/{token_id}  | the token's owner, or admin                  |

Every route is declared on the route table (roles, models, answers: also the
OpenAPI document); every error is a problem. Writes to users and tokens need
PostgreSQL (503 while it is down); sign-in, sign-out and every authenticated
request do not.
"""

from __future__ import annotations

import uuid
from typing import Any, Literal

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field

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
    User,
    UsernameTaken,
    allowed,
    csrf_token,
)
from . import routes
from .problems import FieldError, Problem

__all__ = ["add_people_routes"]

PersonRole = Literal["admin", "supervisor", "call_taker", "dispatcher", "ops"]
_ANYONE = ("admin", "supervisor", "call_taker", "dispatcher", "ops")
_ADMIN = ("admin",)
_PEOPLE: web.AppKey[People] = web.AppKey("people", People)

api = routes.RouteTable("people")


# ---- models ---------------------------------------------------------------------


class SignInBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    username: str = Field(min_length=1, max_length=64)
    password: str = Field(min_length=1, max_length=256)


class Me(BaseModel):
    user_id: str | None
    username: str | None
    display_name: str | None
    role: str
    roles: list[str]
    taker_id: str | None
    agency: str | None
    via: str = Field(description="session, token or config-token")
    csrf_token: str | None = None
    expires_at: float | None = None


class UserOut(BaseModel):
    user_id: str
    username: str
    display_name: str
    roles: list[PersonRole]
    enabled: bool
    taker_id: str | None
    handset: str | None
    agency: str | None
    version: int


class UserList(BaseModel):
    users: list[UserOut]


class UserCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    username: str = Field(min_length=2, max_length=64)
    display_name: str = Field(min_length=1, max_length=128)
    roles: list[PersonRole] = Field(min_length=1)
    password: str = Field(max_length=256)
    enabled: bool = True
    taker_id: str | None = None
    handset: str | None = None
    agency: str | None = None


class UserPatch(BaseModel):
    model_config = ConfigDict(extra="forbid")
    version: int = Field(ge=1, description="the version this change is based on")
    display_name: str | None = Field(None, min_length=1, max_length=128)
    roles: list[PersonRole] | None = Field(None, min_length=1)
    enabled: bool | None = None
    taker_id: str | None = None
    handset: str | None = None
    agency: str | None = None
    password: str | None = Field(None, max_length=256)


class UsernamePath(BaseModel):
    username: str = Field(min_length=1, max_length=64)


class TokenOut(BaseModel):
    id: str
    username: str
    name: str
    roles: list[PersonRole]
    created_at: float
    created_by: str
    expires_at: float | None
    revoked_at: float | None
    last_used_at: float | None


class TokenCreated(TokenOut):
    token: str = Field(description="the secret: shown in this answer only")
    note: str


class TokenList(BaseModel):
    tokens: list[TokenOut]


class TokenCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=100)
    username: str | None = Field(None, max_length=64, description="for someone else: admin only")
    roles: list[PersonRole] = Field(
        default_factory=list, description="a subset of the owner's; empty: all of them"
    )
    expires_in_days: int | None = Field(None, ge=1, le=3650)


class TokenQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")
    username: str | None = Field(None, max_length=64)


class TokenPath(BaseModel):
    token_id: uuid.UUID


# ---- wiring -----------------------------------------------------------------------


def add_people_routes(app: web.Application, people: People) -> None:
    auth.install_people(app, people)
    app[_PEOPLE] = people
    api.install(app)


def _people(request: web.Request) -> People:
    return request.app[_PEOPLE]


def _source(request: web.Request) -> str:
    # The TCP peer; behind a reverse proxy it is the proxy's (docs/PEOPLE.md:
    # X-Forwarded-For is not trusted).
    return request.remote or "unknown"


def _invalid(field: str, message: str) -> Problem:
    return Problem(
        422,
        "the request is not valid",
        errors=[FieldError(in_="body", field=field, message=message)],
    )


async def _db(aw: Any) -> Any:
    try:
        return await aw
    except DirectoryUnavailable as exc:
        raise Problem(503, f"{exc}; try again later", headers={"Retry-After": "30"}) from None


# ---- sessions ---------------------------------------------------------------------


@api.post(
    "/api/session",
    summary="Sign in: a session cookie (HttpOnly, SameSite=Strict) and its CSRF token",
    description="JSON only. Five failures in five minutes lock a username (429, Retry-After).",
    roles=None,
    body=SignInBody,
    response=Me,
    status=201,
    problems=(401, 415, 429, 503),
)
async def sign_in(request: web.Request) -> web.StreamResponse:
    if request.content_type != "application/json":
        # A form post from another site cannot send JSON without CORS asking first.
        raise Problem(415, "send the username and password as application/json")
    body = routes.body(request, SignInBody)
    people = _people(request)
    try:
        signed = await people.sign_in(body.username, body.password, _source(request))
    except SignInRefused as exc:
        headers = {"Retry-After": str(int(exc.retry_after_s) + 1)} if exc.retry_after_s else {}
        raise Problem(exc.status, exc.message, headers=headers) from None
    u = signed.user
    out = Me(
        user_id=u.user_id,
        username=u.username,
        display_name=u.display_name,
        role=u.role,
        roles=list(u.roles),
        taker_id=u.taker_id,
        agency=u.agency,
        via="session",
        csrf_token=signed.csrf_token,
        expires_at=signed.expires_at,
    )
    response = web.json_response(out.model_dump(), status=201)
    response.set_cookie(
        auth.SESSION_COOKIE,
        signed.secret,
        path="/",
        httponly=True,
        samesite="Strict",
        secure=people.cookie_secure,
    )
    return response


@api.get(
    "/api/session",
    summary="Who am I: the caller's roles, and a session's CSRF token",
    roles=_ANYONE,
    response=Me,
)
async def who_am_i(request: web.Request) -> web.StreamResponse:
    caller = routes.caller(request)
    out = Me(
        user_id=caller.user_id or None,
        username=caller.username or None,
        display_name=caller.display_name or None,
        role=auth.canonical_role(caller.role),
        roles=sorted(caller.roles),
        taker_id=caller.taker_id or None,
        agency=caller.agency or None,
        via=caller.via,
    )
    if caller.via == "session":
        secret = request.cookies[auth.SESSION_COOKIE]
        out.csrf_token = csrf_token(secret)
        out.expires_at = _people(request).session_expiry(secret)
    return web.json_response(out.model_dump())


@api.delete(
    "/api/session",
    summary="Sign out (the session's X-CSRF-Token is required)",
    roles=None,
    status=204,
    problems=(401, 403),
)
async def sign_out(request: web.Request) -> web.StreamResponse:
    secret = request.cookies.get(auth.SESSION_COOKIE, "")
    if not secret:
        raise Problem(401, "not signed in")
    people = _people(request)
    if people.by_session(secret) is not None:
        try:
            auth.authenticate(request)  # checks the CSRF token, as for any change
        except auth.AuthError as exc:
            raise Problem(exc.status, exc.message) from None
        await people.sign_out(secret, _source(request))
    response = web.Response(status=204)
    response.del_cookie(auth.SESSION_COOKIE, path="/")
    return response


# ---- users ------------------------------------------------------------------------


@api.get(
    "/api/users", summary="Every user (never a password hash)", roles=_ADMIN, response=UserList
)
async def list_users(request: web.Request) -> web.StreamResponse:
    return web.json_response({"users": [u.public() for u in _people(request).users()]})


@api.get(
    "/api/users/{username}",
    summary="One user",
    roles=_ADMIN,
    path_params=UsernamePath,
    response=UserOut,
    problems=(404,),
)
async def get_user(request: web.Request) -> web.StreamResponse:
    return web.json_response(_known_user(request).public())


def _known_user(request: web.Request) -> User:
    user = _people(request).user(routes.path(request, UsernamePath).username)
    if user is None:
        raise Problem(404, "no such user")
    return user


@api.post(
    "/api/users",
    summary="Create a user",
    roles=_ADMIN,
    body=UserCreate,
    response=UserOut,
    status=201,
    problems=(409, 503),
    audited=("user.create", "users"),
)
async def create_user(request: web.Request) -> web.StreamResponse:
    body = routes.body(request, UserCreate)
    try:
        user = await _db(
            _people(request).create_user(body.model_dump(exclude={"password"}), body.password)
        )
    except InvalidUser as exc:
        raise _invalid(exc.field, exc.message) from None
    except PasswordPolicyError as exc:
        raise _invalid("password", str(exc)) from None
    except UsernameTaken:
        raise Problem(409, f"username {body.username!r} is taken") from None
    return web.json_response(user.public(), status=201)


@api.patch(
    "/api/users/{username}",
    summary="Change a user (a new password ends their sessions; enabled=false signs them out)",
    roles=_ADMIN,
    path_params=UsernamePath,
    body=UserPatch,
    response=UserOut,
    problems=(404, 409, 503),
    audited=("user.update", "user:{username}"),
)
async def patch_user(request: web.Request) -> web.StreamResponse:
    body = routes.body(request, UserPatch)
    changes = body.model_dump(exclude={"version", "password"}, exclude_unset=True)
    username = routes.path(request, UsernamePath).username
    if username == routes.caller(request).username and changes.get("enabled") is False:
        raise Problem(409, "an admin cannot disable themselves; ask another admin")
    return await _update(request, username, body.version, changes, body.password)


@api.delete(
    "/api/users/{username}",
    summary="Disable a user: signed out, tokens revoked; never deleted (who did what stays)",
    roles=_ADMIN,
    path_params=UsernamePath,
    response=UserOut,
    problems=(404, 409, 503),
    audited=("user.disable", "user:{username}"),
)
async def disable_user(request: web.Request) -> web.StreamResponse:
    user = _known_user(request)
    if user.username == routes.caller(request).username:
        raise Problem(409, "an admin cannot disable themselves; ask another admin")
    if not user.enabled:
        return web.json_response(user.public())
    return await _update(request, user.username, user.version, {"enabled": False}, None)


async def _update(
    request: web.Request, username: str, version: int, changes: dict[str, Any], pw: str | None
) -> web.StreamResponse:
    try:
        user = await _db(_people(request).update_user(username, version, changes, pw))
    except NoSuchUser:
        raise Problem(404, "no such user") from None
    except StaleVersion as exc:
        raise Problem(
            409,
            f"{exc}; read it again and retry",
            errors=[FieldError(in_="body", field="version", message=f"now {exc.current}")],
        ) from None
    except InvalidUser as exc:
        raise _invalid(exc.field, exc.message) from None
    except PasswordPolicyError as exc:
        raise _invalid("password", str(exc)) from None
    return web.json_response(user.public())


# ---- tokens -----------------------------------------------------------------------


@api.get(
    "/api/tokens",
    summary="Personal API tokens: yours; an admin's ?username= anyone's, or everyone's",
    roles=_ANYONE,
    query=TokenQuery,
    response=TokenList,
    problems=(404,),
)
async def list_tokens(request: web.Request) -> web.StreamResponse:
    caller = routes.caller(request)
    people = _people(request)
    wanted = routes.query(request, TokenQuery).username or caller.username
    if wanted and not allowed(caller, "tokens.manage", wanted):
        raise Problem(403, "only an admin sees another person's tokens")
    if not wanted and not allowed(caller, "users.manage"):
        raise Problem(403, "a configuration token owns no tokens")
    owner = people.user(wanted) if wanted else None
    if wanted and owner is None:
        raise Problem(404, "no such user")
    tokens = await people.all_tokens(owner.user_id if owner else None)
    return web.json_response({"tokens": [_token_json(people, t) for t in tokens]})


def _token_json(people: People, t: ApiToken) -> dict[str, Any]:
    owner = people.user_by_id(t.user_id)
    return t.public(owner.username if owner else "")


@api.post(
    "/api/tokens",
    summary="Create a personal API token (its secret is in this answer only)",
    roles=_ANYONE,
    body=TokenCreate,
    response=TokenCreated,
    status=201,
    problems=(404, 503),
    audited=("token.create", "tokens"),
)
async def create_token(request: web.Request) -> web.StreamResponse:
    caller = routes.caller(request)
    body = routes.body(request, TokenCreate)
    people = _people(request)
    username = body.username or caller.username
    if not username:
        raise _invalid("username", "a configuration token must name the owner")
    if not allowed(caller, "tokens.manage", username):
        raise Problem(403, "only an admin makes tokens for someone else")
    owner = people.user(username)
    if owner is None or not owner.enabled:
        raise Problem(404, "no such user (or disabled)")
    roles = tuple(dict.fromkeys(body.roles))
    if set(roles) - set(owner.roles):
        raise _invalid("roles", f"{username} holds only {list(owner.roles)}")
    days = body.expires_in_days
    expires = people.clock() + days * 86400 if days is not None else None
    secret, token = await _db(
        people.create_token(
            owner, name=body.name, roles=roles, expires_at=expires, created_by=caller.who
        )
    )
    return web.json_response(
        {**token.public(owner.username), "token": secret, "note": "shown once: store it now"},
        status=201,
    )


@api.delete(
    "/api/tokens/{token_id}",
    summary="Revoke a personal API token (its owner, or an admin)",
    roles=_ANYONE,
    path_params=TokenPath,
    status=204,
    problems=(404, 503),
    audited=("token.revoke", "token:{token_id}"),
)
async def revoke_token(request: web.Request) -> web.StreamResponse:
    caller = routes.caller(request)
    people = _people(request)
    token_id = str(routes.path(request, TokenPath).token_id)
    stored = people.tokens.by_id(token_id) or next(
        (t for t in await people.all_tokens(None) if t.token_id == token_id), None
    )
    owner = people.user_by_id(stored.user_id) if stored else None
    if stored is None or not allowed(caller, "tokens.manage", owner.username if owner else None):
        raise Problem(404, "no such token")  # someone else's is as good as unknown to you
    await _db(people.revoke_token(token_id))
    return web.Response(status=204)
