"""Errors of the call-distribution core, named after whose fault they are.

Telephony events that do not fit the state (an answer for an offer we already
withdrew, a timer we cancelled) are *not* errors: they are the normal result
of races between Asterisk and us, and the core handles them safely without
raising. Errors are kept for two cases:

- ``LocalProtocolError``: our own illegal use, as in h11: our side broke the
  rules. Either the core tried a taker transition that its table forbids (a
  bug in the core), or the I/O shell driving it misused the API (adopting the
  same call twice after a restart, say). Never the fault of a caller or a
  taker.
- ``RemoteProtocolError``: a *request* from outside (a taker or an admin,
  through the HTTP API) that makes no sense in the current state, such as
  pausing a taker who is logged out, or naming a taker who is not configured.
  The core's state is left exactly as it was; the HTTP layer answers 409/404.
"""

from __future__ import annotations


class ProtocolError(Exception):
    """An event or request that does not fit the current state."""


class LocalProtocolError(ProtocolError):
    """Our side (the core, or the shell driving it) broke the rules: a bug."""


class RemoteProtocolError(ProtocolError):
    """A request from a taker or admin is illegal in the current state."""
