"""The people settings (``[people]`` in the TOML file, ``SIAGA_PEOPLE__*``)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["PeopleSettings"]


class PeopleSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # A session ends after this long without a request ...
    session_idle_s: float = Field(30 * 60, gt=0)
    # ... and this long after sign-in, however busy (a shift is at most 12 h).
    session_absolute_s: float = Field(12 * 3600, gt=0)
    # The session cookie's Secure flag; None: on, except in the lab profile
    # (whose service speaks plain HTTP on loopback).
    cookie_secure: bool | None = None
    # Sign-in throttling: this many failures within the window lock for lock_s.
    failures_per_user: int = Field(5, ge=1)
    failures_per_address: int = Field(20, ge=1)
    throttle_window_s: float = Field(300, gt=0)
    throttle_lock_s: float = Field(300, gt=0)
    # How often the local copy of users is refreshed from PostgreSQL, and how
    # often tokens' last-used times and sessions' last requests are written.
    refresh_s: float = Field(30, gt=0)
    flush_s: float = Field(15, gt=0)
    # Seed the documented lab users into an empty users table. None: only in
    # the lab profile; production refuses true (config.py).
    seed_lab_users: bool | None = None
