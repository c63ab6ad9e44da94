"""The pure call-distribution core: ``Distributor.handle(event, now) -> list[Command]``.

No I/O, no clock, no asyncio. See ``_engine.py`` for the theory of operation.
"""

from ._commands import *  # noqa: F403
from ._config import *  # noqa: F403
from ._events import *  # noqa: F403
