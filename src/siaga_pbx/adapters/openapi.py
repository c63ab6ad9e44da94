"""The OpenAPI 3.1 document, built from the declared routes (``routes.Route``).

Schemas come from the very pydantic models the routes validate with (``body``, ``query``,
``path_params``) and answer with (``response``), through pydantic's own JSON Schema
(2020-12, which OpenAPI 3.1 uses as is); every shared schema goes to
``components/schemas``. Each route's answers are its success status plus the problems its
declaration implies (401/403 with roles; 422 with any model; 400/413 with a body) and the
ones it names; every problem is ``application/problem+json`` with the ``Problem`` schema.
A route's roles are in its description and in ``x-roles``.
"""

from __future__ import annotations

import http
import re
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel
from pydantic.json_schema import JsonSchemaMode, models_json_schema

from .problems import CONTENT_TYPE as PROBLEM_TYPE
from .problems import ProblemDetails

if TYPE_CHECKING:
    from .routes import Route

__all__ = ["document"]

_REF = "#/components/schemas/{model}"
_Refs = dict[tuple[Any, JsonSchemaMode], dict[str, Any]]
_TEMPLATE_VAR = re.compile(r"\{([^}:]+)(?::[^}]*)?\}")


def document(routes: Sequence[Route], *, version: str) -> dict[str, Any]:
    """The OpenAPI 3.1 document of ``routes``."""
    wanted: list[tuple[type[BaseModel], JsonSchemaMode]] = [(ProblemDetails, "serialization")]
    for r in routes:
        wanted += [(m, "validation") for m in (r.body, r.query, r.path_params) if m]
        if r.response is not None:
            wanted.append((r.response, "serialization"))
    refs, top = models_json_schema(list(dict.fromkeys(wanted)), ref_template=_REF)
    schemas: dict[str, Any] = top.get("$defs", {})
    problem_ref = refs[(ProblemDetails, "serialization")]

    paths: dict[str, dict[str, Any]] = {}
    for r in sorted(routes, key=lambda r: (r.path, r.method)):
        op: dict[str, Any] = {
            "operationId": r.operation_id,
            "summary": r.summary,
            "tags": [r.tag],
            "responses": _responses(r, refs, problem_ref),
        }
        description = r.description
        if r.roles is None:
            op["security"] = []  # no sign-in
        else:
            roles = sorted(r.roles)
            op["x-roles"] = roles
            description = f"Roles: {', '.join(roles)}. {description}".strip()
        if description:
            op["description"] = description
        params = _parameters(r, refs, schemas)
        if params:
            op["parameters"] = params
        if r.body is not None:
            op["requestBody"] = {
                "required": r.body_required,
                "content": {"application/json": {"schema": refs[(r.body, "validation")]}},
            }
        paths.setdefault(r.path, {})[r.method.lower()] = op

    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Siaga 112 PBX API",
            "version": version,
            "description": (
                "The 112 emergency call service's HTTP API. Every error is an RFC 9457 "
                "problem (application/problem+json); invalid input is always 422."
            ),
        },
        "servers": [{"url": "/"}],
        "security": [{"bearer": []}],
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {
                "bearer": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "A token from the configuration's [http] tokens",
                }
            },
        },
    }


def _responses(r: Route, refs: _Refs, problem_ref: Any) -> dict[str, Any]:
    if r.response is not None:
        schema = refs[(r.response, "serialization")]
    elif r.content_type == "application/json":
        schema = {"type": "object"}
    else:
        schema = {"type": "string"}
    out: dict[str, Any] = {
        str(r.status): {
            "description": http.HTTPStatus(r.status).phrase,
            "content": {r.content_type: {"schema": schema}},
        }
    }
    implied: set[int] = set(r.problems)
    if r.roles is not None:
        implied |= {401, 403}
    if r.body or r.query or r.path_params:
        implied.add(422)
    if r.body is not None:
        implied |= {400, 413}
    for status in sorted(implied):
        out[str(status)] = {
            "description": http.HTTPStatus(status).phrase,
            "content": {PROBLEM_TYPE: {"schema": problem_ref}},
        }
    return out


def _parameters(r: Route, refs: _Refs, schemas: dict[str, Any]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    declared = _fields(r.path_params, refs, schemas)
    for name in _TEMPLATE_VAR.findall(r.path):
        schema, _ = declared.get(name, ({"type": "string"}, True))
        out.append({"name": name, "in": "path", "required": True, "schema": schema})
    for name, (schema, required) in _fields(r.query, refs, schemas).items():
        out.append({"name": name, "in": "query", "required": required, "schema": schema})
    return out


def _fields(
    model: type[BaseModel] | None,
    refs: _Refs,
    schemas: dict[str, Any],
) -> dict[str, tuple[dict[str, Any], bool]]:
    """A parameter model's fields (by alias): their schema and whether they are required."""
    if model is None:
        return {}
    ref = refs[(model, "validation")]["$ref"]
    spec = schemas[ref.rsplit("/", 1)[1]]
    required = set(spec.get("required", ()))
    return {name: (s, name in required) for name, s in spec.get("properties", {}).items()}
