"""Which channels a vanished handset leaves behind (see docs/HANDSETS.md).

A call taker's or dispatcher's phone can die mid-call without a BYE (power,
cable, crash). Asterisk then keeps the channel up for as long as nothing ends
it. The sign we trust is the handset's SIP contact: every handset AOR is
qualified (an OPTIONS every few seconds), and a phone that answers no OPTIONS
for ``qualify_timeout`` seconds is marked Unreachable. A muted or merely quiet
phone still answers OPTIONS, so it is never taken for a lost one; RTP is not
looked at, since some phones send none while muted.

``lost_channels`` is pure: the translator (``service._translate``) turns its
result into ``core.HandsetLost`` for our offer channels and
``conference.PartyLost`` for our party legs. Nothing else on the endpoint is
touched, so a caller (trunk or softphone) is never cut.
"""

from __future__ import annotations

from .. import ari, ids

# pjsip_options.c's label of a contact whose qualify went unanswered. "Removed"
# is not a loss: a phone re-registering from a new address (NAT rebinding)
# removes its old contact while its call may well be alive.
UNREACHABLE = "Unreachable"


def lost_channels(event: ari.ContactStatusChange) -> tuple[str, ...]:
    """Our channels on the endpoint whose contact has just become unreachable."""
    if event.contact_info.contact_status != UNREACHABLE:
        return ()
    return tuple(c for c in event.endpoint.channel_ids if ids.is_ours(c) and ids.is_safe_id(c))
