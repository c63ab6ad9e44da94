"""The centre's configuration as data: items with versions, and the edits on them.

Theory of operation
-------------------
A ``CentreRecord`` is the whole of what an admin may change while the centre
runs: queues, call takers, agencies (with their dispatcher handsets) and
priority numbers. Each item carries a ``version``, 1 when created and one more
on every change, so a client that read version 3 and writes back "version 3"
overwrites nothing it has not seen; a write naming another version is
``Stale`` (HTTP 409).

Everything here is pure: an edit takes a record and returns a new one (or
raises), and ``check`` runs the cores' own rules over the result
(``core.CentreConfig``, ``conference.AgencyDirectory``), so a record that
reaches the store or the cores is one they accept.

Priority numbers are items of their own (``/api/queues/{name}/priority-numbers``)
and also appear, as a ``{number: priority}`` map, in their queue's view, so
``GET /api/queues`` then ``PUT /api/queues`` loses nothing. Because the
queue's view includes them, a change to a queue's priority numbers is also a
change of the queue: its version moves too.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field

from .. import conference, core
from ..config import AgencySettings, QueueSettings, Settings, TakerSettings

_STRICT = ConfigDict(extra="forbid")
NUMBER_PATTERN = r"^\+?[0-9*#]{1,32}$"


class Stale(Exception):
    """A write named a version that is no longer the item's (HTTP 409)."""


class Conflict(Exception):
    """The edit is refused because of the centre's state (HTTP 409), e.g. callers in a queue."""


class NotFound(Exception):
    """No such item (HTTP 404)."""


class Invalid(ValueError):
    """The edit breaks a rule of the record or of a core (HTTP 422)."""


class Versioned(BaseModel):
    version: int = Field(1, ge=1)


class QueueItem(QueueSettings, Versioned):
    """A queue with its version. ``priority_numbers`` is kept empty in the
    record (the numbers are ``PriorityNumberItem``s) and filled in views."""


class TakerItem(TakerSettings, Versioned):
    pass


class AgencyFields(AgencySettings):
    """An agency as an admin creates it: the settings' fields and ``enabled``."""

    enabled: bool = True


class AgencyItem(AgencyFields, Versioned):
    pass


class PriorityNumberSettings(BaseModel):
    """A caller number served ahead of others in one queue (e.g. a hospital)."""

    model_config = _STRICT
    number: str = Field(pattern=NUMBER_PATTERN)
    priority: int = Field(ge=0, le=1000)
    label: str = Field("", max_length=100)


class PriorityNumberItem(PriorityNumberSettings, Versioned):
    queue: str


T = TypeVar("T", bound=Versioned)


def bumped(old: T | None, new: T) -> T:
    """``new`` with the right version: 1 if new, ``old``'s if nothing changed, else one more."""
    if old is None:
        return new.model_copy(update={"version": 1})
    if new.model_copy(update={"version": old.version}) == old:
        return old
    return new.model_copy(update={"version": old.version + 1})


def expect(item: Versioned | None, version: int | None, what: str) -> None:
    """The writer's ``version`` must be the item's (``None``: no check asked for)."""
    if item is None:
        raise NotFound(f"no {what}")
    if version is not None and version != item.version:
        raise Stale(f"{what} is at version {item.version}, not {version}: read it again and retry")


@dataclass(frozen=True, slots=True)
class CentreRecord:
    """Every configurable item, by key. Queues and takers keep their order (a
    ``linear`` queue rings its takers in it; a new one goes last).
    ``default_queue`` comes from the settings."""

    queues: Mapping[str, QueueItem]
    takers: Mapping[str, TakerItem]
    agencies: Mapping[str, AgencyItem]
    priority_numbers: Mapping[tuple[str, str], PriorityNumberItem]
    default_queue: str = "main"
    # Agencies from the settings only (agencies_from_database = false): not edited here.
    agencies_fixed: bool = field(default=False, compare=False)

    # ---- views -----------------------------------------------------------------

    def numbers_of(self, queue: str) -> dict[str, int]:
        return {
            p.number: p.priority
            for (q, _), p in sorted(self.priority_numbers.items())
            if q == queue
        }

    def queue_view(self, name: str) -> QueueItem:
        q = self.queues[name]
        return q.model_copy(update={"priority_numbers": self.numbers_of(name)})

    def queue_json(self, name: str) -> dict[str, Any]:
        return self.queue_view(name).model_dump(mode="json")

    def centre(self) -> core.CentreConfig:
        """What the distribution core runs (raises ``ValueError`` with the core's reason)."""
        return core.CentreConfig(
            queues=tuple(self.queue_view(n).to_core() for n in self.queues),
            takers=tuple(
                core.TakerConfig(
                    taker_id=t.id,
                    endpoint=t.endpoint,
                    queues=tuple(t.queues),
                    logged_in=t.logged_in,
                )
                for t in self.takers.values()
            ),
            default_queue=self.default_queue,
        )

    def directory(self) -> conference.AgencyDirectory:
        """The enabled agencies for the conference core; a fallback to a
        disabled agency is dropped (as ``adapters.conference.load_directory`` does)."""
        enabled = {c: a for c, a in self.agencies.items() if a.enabled}
        return conference.AgencyDirectory(
            tuple(
                replace(a.to_core(), fallback=a.fallback if a.fallback in enabled else "")
                for a in enabled.values()
            )
        )

    def check(self) -> CentreRecord:
        """Raise ``Invalid`` unless both cores accept this record."""
        for (q, _), _p in self.priority_numbers.items():
            if q not in self.queues:
                raise Invalid(f"priority number in unknown queue {q!r}")
        try:
            self.centre()
            self.directory()
        except ValueError as exc:
            raise Invalid(str(exc)) from None
        for a in self.agencies.values():  # the directory drops disabled ones: check them too
            if a.fallback and a.fallback not in self.agencies:
                raise Invalid(f"agency {a.code}: fallback {a.fallback!r} is not an agency")
        return self

    # ---- edits (each returns a new record; ``check`` it before use) ------------

    def with_queues(self, items: Iterable[QueueItem]) -> CentreRecord:
        """The whole list replaced (``PUT /api/queues``): queues not named go,
        each queue's priority numbers become those of its ``priority_numbers``.
        An item that gives its ``version`` must match; one without is written
        as it is (the list API of before versions)."""
        items = list(items)
        names = [q.name for q in items]
        if len(set(names)) != len(names):
            raise Invalid("queue names must be unique")
        queues: dict[str, QueueItem] = {}
        numbers = {k: p for k, p in self.priority_numbers.items() if k[0] in names}
        for item in items:
            old = self.queues.get(item.name)
            if "version" in item.model_fields_set:
                if old is None:
                    raise Stale(f"queue {item.name!r} no longer exists: read the list again")
                expect(old, item.version, f"queue {item.name!r}")
            numbers = _replace_numbers(numbers, item.name, item.priority_numbers)
            stored = item.model_copy(update={"priority_numbers": {}})
            queues[item.name] = bumped(old, stored)
        new = replace(self, queues=queues, priority_numbers=numbers)
        return new.bump_queues_of_changed_numbers(self)

    def with_queue(self, item: QueueItem) -> CentreRecord:
        """One queue created or changed (its priority numbers as in ``item``)."""
        numbers = _replace_numbers(self.priority_numbers, item.name, item.priority_numbers)
        stored = item.model_copy(update={"priority_numbers": {}})
        queues = dict(self.queues) | {item.name: bumped(self.queues.get(item.name), stored)}
        return replace(
            self, queues=queues, priority_numbers=numbers
        ).bump_queues_of_changed_numbers(self)

    def without_queue(self, name: str) -> CentreRecord:
        queues = {n: q for n, q in self.queues.items() if n != name}
        numbers = {k: p for k, p in self.priority_numbers.items() if k[0] != name}
        return replace(self, queues=queues, priority_numbers=numbers)

    def with_taker(self, item: TakerItem) -> CentreRecord:
        old = self.takers.get(item.id)
        return replace(self, takers=dict(self.takers) | {item.id: bumped(old, item)})

    def without_taker(self, taker_id: str) -> CentreRecord:
        return replace(self, takers={k: t for k, t in self.takers.items() if k != taker_id})

    def with_agency(self, item: AgencyItem) -> CentreRecord:
        old = self.agencies.get(item.code)
        return replace(self, agencies=dict(self.agencies) | {item.code: bumped(old, item)})

    def without_agency(self, code: str) -> CentreRecord:
        return replace(self, agencies={k: a for k, a in self.agencies.items() if k != code})

    def with_priority_number(self, item: PriorityNumberItem) -> CentreRecord:
        key = (item.queue, item.number)
        numbers = dict(self.priority_numbers) | {key: bumped(self.priority_numbers.get(key), item)}
        return replace(self, priority_numbers=numbers).bump_queues_of_changed_numbers(self)

    def without_priority_number(self, queue: str, number: str) -> CentreRecord:
        numbers = {k: p for k, p in self.priority_numbers.items() if k != (queue, number)}
        return replace(self, priority_numbers=numbers).bump_queues_of_changed_numbers(self)

    def bump_queues_of_changed_numbers(self, before: CentreRecord) -> CentreRecord:
        """A queue whose priority numbers changed is itself changed: one more version
        (unless its own settings changed too and it was bumped already)."""
        queues = dict(self.queues)
        for name, q in self.queues.items():
            old = before.queues.get(name)
            if old is None or before.numbers_of(name) == self.numbers_of(name):
                continue
            if q.version == old.version:
                queues[name] = q.model_copy(update={"version": old.version + 1})
        return replace(self, queues=queues)


def _replace_numbers(
    numbers: Mapping[tuple[str, str], PriorityNumberItem], queue: str, wanted: Mapping[str, int]
) -> dict[tuple[str, str], PriorityNumberItem]:
    """``queue``'s numbers set to ``wanted``; unchanged ones keep their label and version."""
    out = {k: p for k, p in numbers.items() if k[0] != queue}
    for number, priority in wanted.items():
        old = numbers.get((queue, number))
        base = old or PriorityNumberItem(queue=queue, number=number, priority=priority)
        out[(queue, number)] = bumped(old, base.model_copy(update={"priority": priority}))
    return out


def merged(current: BaseModel, patch: Mapping[str, Any], key: str) -> dict[str, Any]:
    """``current`` as JSON with the top-level fields of ``patch`` replaced (a
    nested object such as ``overflow`` is given whole). The key cannot change."""
    body = current.model_dump(mode="json")
    if key in patch and patch[key] != body[key]:
        raise Invalid(f"{key} is the item's key and cannot change; create a new item instead")
    return body | dict(patch)


def seed_of(settings: Settings) -> CentreRecord:
    """The record the settings (TOML file, environment) describe: version 1 everywhere."""
    queues = {
        q.name: QueueItem(**q.model_dump(exclude={"priority_numbers"})) for q in settings.queues
    }
    numbers = {
        (q.name, n): PriorityNumberItem(queue=q.name, number=n, priority=p)
        for q in settings.queues
        for n, p in q.priority_numbers.items()
    }
    return CentreRecord(
        queues=queues,
        takers={t.id: TakerItem(**t.model_dump()) for t in settings.takers},
        agencies={a.code: AgencyItem(**a.model_dump()) for a in settings.agencies},
        priority_numbers=numbers,
        default_queue=settings.default_queue,
        agencies_fixed=not settings.agencies_from_database,
    )


Edit = Callable[[CentreRecord], CentreRecord]
