"""The glue between the two cores, pure: one core's facts become the other's events.

The distribution core owns callers and call takers; the conference core owns
dispatchers and supervisors on a live call. They meet at three moments, and
only here:

- **connected**: a taker's handset was bridged with the caller (the
  distribution core's ``ConnectCall`` *ran*): the call is live, and
  dispatchers may be added to it (``conference.CallConnected``);
- **ended**: the distribution core ended the call or sent the caller out of
  the centre (``EndCall``, ``RedirectCaller`` ran): the conference ends too
  (``conference.CallEnded``);
- **handover**: the taker handed the call to the dispatchers
  (``conference.HandOverCall``): the taker is free again, and the
  distribution core forgets the call (``core.TakerHandedOver``).

The fourth, **return** (the last talking dispatcher left a handed-over
call), needs the caller's channel from Asterisk, so the shell looks it up in
the call's lane and then readmits the caller (``CallService``).
"""

from __future__ import annotations

from .. import conference, core

# Core commands whose completion the conference core must hear of.
FOLLOWED_BY_CONFERENCE = (core.ConnectCall, core.EndCall, core.RedirectCaller)


def conference_events_after(cmd: core.Command) -> list[conference.Event]:
    """A distribution-core command ran in Asterisk: what the conference core learns."""
    if isinstance(cmd, core.ConnectCall):
        return [conference.CallConnected(cmd.call_id, cmd.attempt_id, cmd.taker_id)]
    if isinstance(cmd, (core.EndCall, core.RedirectCaller)):
        return [conference.CallEnded(cmd.call_id)]
    return []


def core_event_for(cmd: conference.HandOverCall) -> core.Event:
    """The conference core took the call over: the taker is released."""
    return core.TakerHandedOver(cmd.call_id)
