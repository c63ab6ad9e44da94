"""Errors of the ARI client, each saying whose fault it was.

- ``AriError`` and its subclasses: Asterisk refused or failed a REST request we
  sent (the status says which), or could not be reached at all
  (``AriUnavailable``), or answered with a body we cannot read
  (``AriBadResponse``, Asterisk's fault).
- ``MalformedEvent``: Asterisk (or something pretending to be it) sent an event
  we cannot read. The event stream logs and skips these.
- ``ApplicationReplacedError``: another process connected to our Stasis app and
  Asterisk now sends it our calls. Fatal for this instance, by design.
- ``InvalidArgument``: our own code asked for something ARI cannot express (an
  id with a path separator, a list item with a comma). Raised before any I/O.
"""

from __future__ import annotations


class AriError(Exception):
    """A REST request to Asterisk failed; carries what we asked and what it said."""

    def __init__(self, method: str, path: str, status: int | None, message: str) -> None:
        self.method = method
        self.path = path
        self.status = status
        self.message = message
        super().__init__(str(self))

    def __str__(self) -> str:
        status = "" if self.status is None else f" (HTTP {self.status})"
        return f"ARI {self.method} {self.path} failed{status}: {self.message}"

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(method={self.method!r}, path={self.path!r}, "
            f"status={self.status!r}, message={self.message!r})"
        )


class AriBadRequest(AriError):
    """400: Asterisk says our request was invalid (a bug on our side)."""


class AriAuthError(AriError):
    """401/403: Asterisk rejected the ARI credentials (configuration problem)."""


class AriNotFound(AriError):
    """404: the channel, bridge, playback or recording does not exist (any more)."""


class AriConflict(AriError):
    """409: the object exists already or is in a state that forbids the request."""


class AriPreconditionFailed(AriError):
    """412: the channel is in a state that forbids the request (e.g. not answered)."""


class AriUnprocessable(AriError):
    """422: a referenced object (channel, bridge, event source) does not exist."""


class AriServerError(AriError):
    """5xx: Asterisk failed internally."""


class AriUnavailable(AriError):
    """Asterisk did not answer: connection refused, reset or timed out."""


class AriBadResponse(AriError):
    """Asterisk answered with success but a body we cannot read (Asterisk's fault)."""


_BY_STATUS: dict[int, type[AriError]] = {
    400: AriBadRequest,
    401: AriAuthError,
    403: AriAuthError,
    404: AriNotFound,
    409: AriConflict,
    412: AriPreconditionFailed,
    422: AriUnprocessable,
}


def error_class_for_status(status: int) -> type[AriError]:
    """The exception class for a failed HTTP status (``AriError`` when unmapped)."""
    if status >= 500:
        return AriServerError
    return _BY_STATUS.get(status, AriError)


class MalformedEvent(ValueError):
    """An event from Asterisk's websocket that is not valid JSON or misses fields."""


class ApplicationReplacedError(Exception):
    """Another instance took over our Stasis app; this instance must step down."""

    def __init__(self, app: str) -> None:
        self.app = app
        super().__init__(f"another instance took over the Stasis app {app!r}; stepping down")


class InvalidArgument(ValueError):
    """Our code passed a value ARI cannot carry safely; raised before any request."""
