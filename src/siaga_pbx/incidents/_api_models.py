"""Validated shapes of REST input (pydantic). Extra fields are errors."""

from __future__ import annotations

from typing import Annotated, Literal, Self, get_args

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    StrictInt,
    ValidationError,
    field_validator,
    model_validator,
)

from ._text import has_unstorable

__all__ = [
    "CATEGORIES",
    "DISPOSITIONS",
    "Category",
    "Disposition",
    "IncidentPatch",
    "ListParams",
    "field_errors",
]

Category = Literal[
    "fire",
    "medical",
    "traffic_accident",
    "crime",
    "disaster",
    "sanitation",
    "animal_rescue",
    "other",
]
Disposition = Literal["emergency", "information", "prank", "ghost", "abandoned", "test"]
CATEGORIES: tuple[str, ...] = get_args(Category)
DISPOSITIONS: tuple[str, ...] = get_args(Disposition)

Responder = Annotated[str, Field(min_length=1, max_length=200)]


def _storable(value: str) -> str:
    if has_unstorable(value):
        raise ValueError("contains NUL or an unpaired surrogate, which cannot be stored")
    return value


class IncidentPatch(BaseModel):
    """A call taker's classification of an incident. Only the fields sent
    change; explicit nulls and empty patches are refused."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    category: Category | None = None
    priority: Annotated[StrictInt, Field(ge=1, le=5)] | None = None
    disposition: Disposition | None = None
    status: Literal["open", "closed"] | None = None
    address_text: Annotated[str, Field(max_length=2000)] | None = None
    notes: Annotated[str, Field(max_length=20000)] | None = None
    responders: Annotated[list[Responder], Field(max_length=50)] | None = None

    @field_validator("address_text", "notes")
    @classmethod
    def _text_storable(cls, value: str | None) -> str | None:
        return None if value is None else _storable(value)

    @field_validator("responders")
    @classmethod
    def _responders_storable(cls, value: list[str] | None) -> list[str] | None:
        return None if value is None else [_storable(v) for v in value]

    @model_validator(mode="after")
    def _no_nulls_not_empty(self) -> Self:
        if not self.model_fields_set:
            raise ValueError("nothing to change: send at least one field")
        nulls = [name for name in self.model_fields_set if getattr(self, name) is None]
        if nulls:
            raise ValueError(f"null is not a value for: {', '.join(sorted(nulls))}")
        return self

    def changes(self) -> dict[str, object]:
        """The fields sent, by name."""
        return {name: getattr(self, name) for name in self.model_fields_set}


class ListParams(BaseModel):
    """Query string of GET /api/incidents. Times are ISO 8601 with an offset
    (or UNIX epoch seconds); ``from`` is inclusive, ``to`` exclusive."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    opened_from: AwareDatetime | None = Field(default=None, alias="from")
    opened_to: AwareDatetime | None = Field(default=None, alias="to")
    category: Category | None = None
    disposition: Disposition | None = None
    number: Annotated[str, Field(min_length=1, max_length=256)] | None = None
    limit: Annotated[int, Field(ge=1, le=200)] = 50
    cursor: Annotated[str, Field(min_length=1, max_length=512)] | None = None

    @field_validator("number")
    @classmethod
    def _number_storable(cls, value: str | None) -> str | None:
        return None if value is None else _storable(value)


def field_errors(exc: ValidationError) -> dict[str, str]:
    """``{"field.path": "message"}`` for a 4xx body; model-level errors under ``_``."""
    out: dict[str, str] = {}
    for err in exc.errors(include_url=False):
        key = ".".join(str(p) for p in err["loc"]) or "_"
        msg = str(err["msg"])
        out[key] = f"{out[key]}; {msg}" if key in out else msg
    return out
