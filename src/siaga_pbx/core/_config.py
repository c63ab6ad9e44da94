"""Configuration the core works from: queues and call takers.

Plain frozen dataclasses so the core stays free of I/O and of settings
machinery; ``siaga_pbx.config`` builds them from pydantic-settings and the admin
API sends new ones in ``ConfigChanged``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum

from ._commands import HoldMode


class Strategy(str, Enum):  # noqa: UP042 - contract enum: str mixin kept, other modules rely on str()
    RINGALL = "ringall"
    LEASTRECENT = "leastrecent"
    FEWESTCALLS = "fewestcalls"
    RRMEMORY = "rrmemory"
    LINEAR = "linear"
    RANDOM = "random"


@dataclass(frozen=True, slots=True)
class Overflow:
    """Where a caller goes when the queue cannot serve them in time.

    Exactly one of ``queue`` (another queue of ours) or ``dial`` (a dial string
    to a backup centre) is set. ``after_s``: wait after which the caller
    overflows; ``when_no_takers``: overflow at once when nobody is logged in.
    """

    after_s: float | None = None
    queue: str = ""
    dial: str = ""
    when_no_takers: bool = True

    def __post_init__(self) -> None:
        if self.queue and self.dial:
            raise ValueError("overflow: set queue or dial, not both")
        if self.after_s is not None and self.after_s <= 0:
            raise ValueError("overflow: after_s must be positive")

    @property
    def has_target(self) -> bool:
        return bool(self.queue or self.dial)


@dataclass(frozen=True, slots=True)
class PriorityRules:
    """Lower number = served first. Default priority is ``normal``."""

    normal: int = 5
    repeat_caller: int = 3  # called again within repeat_window_s
    repeat_window_s: float = 600.0
    numbers: dict[str, int] = field(default_factory=dict)  # e.g. hospitals


@dataclass(frozen=True, slots=True)
class QueueConfig:
    name: str
    strategy: Strategy = Strategy.LEASTRECENT
    ring_timeout_s: float = 15.0
    retry_delay_s: float = 1.0
    wrapup_s: float = 0.0
    max_misses: int = 3  # consecutive ring-no-answers before auto-pause
    overflow: Overflow = field(default_factory=Overflow)
    priorities: PriorityRules = field(default_factory=PriorityRules)
    hold: HoldMode = HoldMode.RINGBACK
    music_class: str = "default"
    reassurance_every_s: float | None = 30.0
    announce_position: bool = False
    requeue_dropped_at_head: bool = True
    # A taker's plain hangup (Q.850 cause 16) ends the call; a drop (any other
    # cause) always requeues the caller. True: requeue on every taker hangup.
    requeue_on_taker_hangup: bool = False

    def __post_init__(self) -> None:
        if not self.name:
            raise ValueError("queue name must not be empty")
        if self.ring_timeout_s <= 0:
            raise ValueError(f"queue {self.name}: ring_timeout_s must be positive")
        if self.retry_delay_s < 0 or self.wrapup_s < 0:
            raise ValueError(f"queue {self.name}: delays must not be negative")
        if self.max_misses < 1:
            raise ValueError(f"queue {self.name}: max_misses must be at least 1")


@dataclass(frozen=True, slots=True)
class TakerConfig:
    taker_id: str
    endpoint: str  # e.g. "PJSIP/taker1"
    queues: tuple[str, ...] = ("main",)
    logged_in: bool = True  # logged in at start-up (lab); production: False


@dataclass(frozen=True, slots=True)
class CentreConfig:
    queues: tuple[QueueConfig, ...]
    takers: tuple[TakerConfig, ...]
    default_queue: str = "main"

    def __post_init__(self) -> None:
        names = [q.name for q in self.queues]
        if len(set(names)) != len(names):
            raise ValueError("queue names must be unique")
        if self.default_queue not in names:
            raise ValueError(f"default queue {self.default_queue!r} is not configured")
        for q in self.queues:
            if q.overflow.queue and q.overflow.queue not in names:
                raise ValueError(f"queue {q.name}: overflow queue {q.overflow.queue!r} unknown")
        ids = [t.taker_id for t in self.takers]
        if len(set(ids)) != len(ids):
            raise ValueError("taker ids must be unique")
        for t in self.takers:
            for qn in t.queues:
                if qn not in names:
                    raise ValueError(f"taker {t.taker_id}: queue {qn!r} unknown")

    def queue(self, name: str) -> QueueConfig:
        for q in self.queues:
            if q.name == name:
                return q
        raise KeyError(name)
