"""The lab's documented users (README, "The lab profile"). Never in production."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["LAB_USERS", "LabUser"]


@dataclass(frozen=True, slots=True)
class LabUser:
    username: str
    password: str
    display_name: str
    roles: tuple[str, ...]
    taker_id: str | None = None
    handset: str | None = None
    agency: str | None = None


LAB_USERS: tuple[LabUser, ...] = (
    LabUser("admin", "admin-lab", "Lab admin", ("admin",)),
    LabUser("supervisor", "supervisor-lab", "Lab supervisor", ("supervisor",)),
    *(
        LabUser(
            f"taker{n}",
            f"taker{n}-lab",
            f"Lab call taker {n}",
            ("call_taker",),
            taker_id=f"taker{n}",
            handset=f"PJSIP/taker{n}",
        )
        for n in (1, 2, 3)
    ),
    LabUser("ops", "ops-lab", "Lab operations", ("ops",)),
    LabUser("damkar", "damkar-lab", "Lab Damkar dispatcher", ("dispatcher",), agency="damkar"),
)
