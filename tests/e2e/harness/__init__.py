"""End-to-end harness: a real Asterisk 22 instance plus sipp callers and handsets.

Import the fixture factories into a conftest.py::

    from tests.e2e.harness import asterisk_fixture, sipp_fixture

    asterisk_instance = asterisk_fixture("test")
    sipp = sipp_fixture("asterisk_instance")
"""

from .asterisk import (
    AsteriskInstance,
    AsteriskProvisionError,
    asterisk_fixture,
    read_profile,
    start_instance,
    stop_instance,
)
from .sipp import (
    TONE_A_HZ,
    TONE_B_HZ,
    SippError,
    SippProcess,
    SippResult,
    SippRunner,
    make_tone,
    sipp_fixture,
)

__all__ = [
    "TONE_A_HZ",
    "TONE_B_HZ",
    "AsteriskInstance",
    "AsteriskProvisionError",
    "SippError",
    "SippProcess",
    "SippResult",
    "SippRunner",
    "asterisk_fixture",
    "make_tone",
    "read_profile",
    "sipp_fixture",
    "start_instance",
    "stop_instance",
]
