"""OpenAPI 3.1 for the REST API, generated from the live metadata.

:func:`openapi_document` describes exactly what :func:`objectos.api.rest.data_routes`
serves for the registry it is given:

- ``components.schemas``: per object a read schema (``<object>``: every column,
  system fields ``readOnly``, computed fields ``readOnly``, lookups as an id
  or, with ``expand``, the embedded record), a create schema
  (``<object>.Create``: ``required`` fields without a default, no system,
  computed or readonly fields, ``additionalProperties: false``) and an update
  schema (``<object>.Update``: nothing required, plus the ``version`` to
  check). Field types map to JSON Schema with formats, ``enum`` from select
  options, ``minimum``/``maximum``, ``minLength``/``maxLength``; a field that
  may be empty is ``null``-able. Also the envelope, pagination and error
  schemas.
- ``paths``: per object the operations its ``enable.apiEnabled`` /
  ``apiMethods`` allow (an object the API hides has no paths and no schemas),
  with the list query parameters (``filter select sort top skip cursor expand
  search count`` and one equality parameter per filterable field), the
  ``ETag``/``If-Match``/``If-None-Match`` headers, and the error responses each
  operation can give.
- ``components.securitySchemes``: bearer JWT, required when the app
  authenticates (``auth_required``), optional while it runs the anonymous
  authenticator;
- ``POST /api/v1/permissions/check`` when the app mounts it (``permissions``);
- ``GET /api/v1/realtime/sse`` and ``/api/v1/realtime/poll``, record events
  (:mod:`objectos.api.sse`), when the app mounts them (``realtime``).

:func:`downgrade_to_30` rewrites a document for OpenAPI 3.0 tools (nullable
instead of ``null`` in ``type``); Swagger UI 4, which ``/docs`` serves
offline, renders only 3.0.
"""

from __future__ import annotations

import copy
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from objectos.api.discovery import API_BASE
from objectos.api.envelope import error_response
from objectos.api.rest import (
    DATA_BASE,
    MAX_BODY_BYTES,
    MAX_OFFSET,
    META_BASE,
    RegistrySource,
    etag_matches,
)
from objectos.api.sse import POLL_PATH, SSE_PATH
from objectos.data.query import MAX_LIMIT, RESERVED_PARAMS
from objectos.data.values import decimal_places
from objectos.metadata.loader import KINDS, content_etag
from objectos.metadata.registry import MetadataRegistry
from objectos.metadata.relations import reference_target
from objectos.protocol.object import (
    NUMERIC_TYPES,
    FieldType,
    ObjectField,
    ObjectSchema,
)

OPENAPI_PATH = f"{API_BASE}/openapi.json"
OPENAPI_30_PATH = f"{API_BASE}/openapi-3.0.json"

ID_PATTERN = "^[A-Za-z0-9_\\-]{1,36}$"
TIME_PATTERN = "^\\d{2}:\\d{2}(:\\d{2}(\\.\\d{1,6})?)?$"

_REF = "#/components/schemas/"
_ERROR_STATUSES = {
    "400": "The request is invalid (validation_error, invalid_field, missing_required_field, "
    "invalid_filter).",
    "401": "Not authenticated (unauthenticated, invalid_token, expired_token).",
    "403": "Not permitted (permission_denied, field_not_accessible, record_not_accessible).",
    "404": "No such object or record (object_not_found, record_not_found, not_found).",
    "405": "The operation is not enabled for this object (see the Allow header).",
    "409": "Conflict (concurrent_modification, duplicate_value, delete_restricted).",
    "413": "The request body is too large (payload_too_large).",
    "429": "Too many requests (rate_limit_exceeded; see Retry-After).",
    "500": "Internal error (internal_error; no details are disclosed).",
    "503": "The data service is not available yet (service_unavailable).",
}
_READ_ERRORS = ("400", "401", "403", "404", "429", "500", "503")
_WRITE_ERRORS = ("400", "401", "403", "404", "405", "409", "413", "429", "500", "503")

_SYSTEM_READ: dict[str, dict[str, Any]] = {
    "id": {"type": "string", "pattern": ID_PATTERN, "readOnly": True, "description": "Record id."},
    "created_at": {"type": "string", "format": "date-time", "readOnly": True},
    "updated_at": {"type": "string", "format": "date-time", "readOnly": True},
    "created_by": {"type": ["string", "null"], "readOnly": True},
    "updated_by": {"type": ["string", "null"], "readOnly": True},
    "owner": {"type": ["string", "null"], "readOnly": True},
    "version": {
        "type": "integer",
        "minimum": 1,
        "readOnly": True,
        "description": "Grows by one with every change; the record's ETag.",
    },
}


# --- field types ----------------------------------------------------------------------------


def _nullable(schema: dict[str, Any]) -> dict[str, Any]:
    if "enum" in schema and None not in schema["enum"]:
        schema = {**schema, "enum": [*schema["enum"], None]}
    kind = schema.get("type")
    if isinstance(kind, str):
        return {**schema, "type": [kind, "null"]}
    if isinstance(kind, list):
        return {**schema, "type": [*kind, "null"]} if "null" not in kind else schema
    if "anyOf" in schema:
        return {**schema, "anyOf": [*schema["anyOf"], {"type": "null"}]}
    return schema  # {} already allows null


def _scalar(obj: ObjectSchema, fld: ObjectField, kind: FieldType, *, read: bool) -> dict[str, Any]:
    """JSON Schema of one value of ``kind`` (not yet list-wrapped or nullable)."""
    text: dict[str, Any] = {"type": "string"}
    if fld.maxLength is not None:
        text["maxLength"] = fld.maxLength
    if fld.minLength is not None:
        text["minLength"] = fld.minLength
    if kind in (FieldType.TEXT, FieldType.TEXTAREA, FieldType.MARKDOWN, FieldType.HTML):
        return text
    if kind in (FieldType.RICHTEXT, FieldType.CODE, FieldType.COLOR):
        return text
    if kind in (FieldType.IMAGE, FieldType.FILE, FieldType.AVATAR):
        return text
    if kind == FieldType.PASSWORD:
        return {**text, "format": "password", "writeOnly": True}
    if kind == FieldType.EMAIL:
        return {**text, "format": "email"}
    if kind == FieldType.URL:
        return {**text, "format": "uri", "pattern": "^https?://"}
    if kind == FieldType.PHONE:
        return {**text, "pattern": "^\\+?[0-9 ().\\-/]{5,32}$"}
    if kind in (FieldType.SELECT, FieldType.RADIO, FieldType.MULTISELECT, FieldType.CHECKBOXES):
        return {"type": "string", "enum": [o.value for o in fld.options or ()]}
    if kind in NUMERIC_TYPES:
        places = decimal_places(fld, kind)
        schema: dict[str, Any] = {
            "type": "integer" if read and places is not None and places[1] == 0 else "number"
        }
        if fld.min is not None:
            schema["minimum"] = fld.min
        if fld.max is not None:
            schema["maximum"] = fld.max
        if places is not None:
            precision, scale = places
            schema["description"] = f"Decimal({precision}, {scale})"
            # Values round to `scale` places and must keep under precision - scale digits.
            bound = 10 ** (precision - scale) - 10**-scale if scale else 10**precision - 1
            schema.setdefault("maximum", bound)
            schema.setdefault("minimum", -bound)
        return schema
    if kind in (FieldType.BOOLEAN, FieldType.TOGGLE):
        return {"type": "boolean"}
    if kind == FieldType.DATE:
        return {"type": "string", "format": "date"}
    if kind == FieldType.DATETIME:
        return {"type": "string", "format": "date-time"}
    if kind == FieldType.TIME:
        # Times carry no UTC offset, which the JSON Schema "time" format demands.
        return {"type": "string", "pattern": TIME_PATTERN}
    if kind in (FieldType.LOOKUP, FieldType.MASTER_DETAIL, FieldType.TREE):
        target = reference_target(obj.name, fld) or obj.name
        ref = {"type": "string", "pattern": ID_PATTERN, "description": f"A {target} id."}
        if read:
            embedded = {"$ref": f"{_REF}{target}", "description": f"The {target} (expand)."}
            return {"anyOf": [ref, embedded]}
        return ref
    if kind == FieldType.AUTONUMBER:
        return {"type": "string"}
    if kind == FieldType.TAGS:
        return {"type": "array", "items": {"type": "string"}}
    if kind == FieldType.ADDRESS:
        part = {"type": ["string", "null"]}
        keys = ("street", "city", "state", "postalCode", "country", "countryCode", "formatted")
        return {
            "type": "object",
            "properties": {key: part for key in keys},
            "additionalProperties": False,
        }
    if kind == FieldType.LOCATION:
        return {
            "type": "object",
            "properties": {
                "latitude": {"type": "number", "minimum": -90, "maximum": 90},
                "longitude": {"type": "number", "minimum": -180, "maximum": 180},
                "altitude": {"type": ["number", "null"]},
                "accuracy": {"type": ["number", "null"]},
            },
            "required": ["latitude", "longitude"],
            "additionalProperties": False,
        }
    return {}  # json: any JSON value


def field_schema(obj: ObjectSchema, name: str, fld: ObjectField, *, read: bool) -> dict[str, Any]:
    """The JSON Schema of field ``name`` of ``obj`` in a read (response) or write body."""
    kind = fld.value_type
    if fld.type == FieldType.SUMMARY:
        function = fld.summaryOperations.function if fld.summaryOperations else "count"
        # min/max take the child field's type (a date, say); count is whole, sum/avg numeric.
        schema: dict[str, Any] = (
            {"type": "integer"}
            if function == "count"
            else {"type": "number"}
            if function in ("sum", "avg")
            else {}
        )
    else:
        schema = _scalar(obj, fld, kind, read=read)
    if kind in (FieldType.MULTISELECT, FieldType.CHECKBOXES) or (
        fld.multiple and kind not in (FieldType.TAGS, FieldType.JSON)
    ):
        schema = {"type": "array", "items": schema}
    if fld.label:
        schema.setdefault("title", fld.label)
    if fld.description:
        schema["description"] = fld.description
    if fld.computed or (read and fld.readonly):
        schema["readOnly"] = True
    if fld.type == FieldType.FORMULA and fld.expression:
        schema["description"] = f"Formula: {fld.expression}"
    if fld.defaultValue is not None and not read:
        schema["default"] = fld.defaultValue
    # Required fields may still be null in a response (a select's records
    # predating the rule, a field selected away is absent rather than null).
    if read or not fld.required:
        schema = _nullable(schema)
    return schema


def _has_default(fld: ObjectField) -> bool:
    return fld.defaultValue is not None or any(o.default for o in fld.options or ())


def object_schemas(obj: ObjectSchema) -> dict[str, dict[str, Any]]:
    """``{<obj>, <obj>.Create, <obj>.Update}`` schemas of one object."""
    title = obj.label or obj.name
    read: dict[str, Any] = dict(_SYSTEM_READ)
    create: dict[str, Any] = {
        "id": {
            "type": "string",
            "pattern": ID_PATTERN,
            "description": "Optional client-chosen id (letters, digits, - and _).",
        }
    }
    update: dict[str, Any] = {}
    required: list[str] = []
    for name, fld in obj.fields.items():
        if fld.type != FieldType.PASSWORD:
            read[name] = field_schema(obj, name, fld, read=True)
        if fld.computed or fld.readonly:
            continue
        create[name] = field_schema(obj, name, fld, read=False)
        update[name] = field_schema(obj, name, fld, read=False)
        if fld.required and not _has_default(fld):
            required.append(name)
    update["version"] = {
        "type": "integer",
        "minimum": 1,
        "description": "Optimistic concurrency: the version you read (like If-Match).",
    }
    description = obj.description or f"A {title} record."
    return {
        obj.name: {
            "type": "object",
            "title": title,
            "description": description,
            "properties": read,
            "required": ["id"],
            "additionalProperties": False,
        },
        f"{obj.name}.Create": {
            "type": "object",
            "title": f"New {title}",
            "properties": create,
            "required": required,
            "additionalProperties": False,
        },
        f"{obj.name}.Update": {
            "type": "object",
            "title": f"{title} changes",
            "properties": update,
            "additionalProperties": False,
        },
        f"{obj.name}.Envelope": _envelope({"$ref": f"{_REF}{obj.name}"}),
        f"{obj.name}.ListEnvelope": _envelope(
            {"type": "array", "items": {"$ref": f"{_REF}{obj.name}"}}, paginated=True
        ),
    }


# --- shared schemas -------------------------------------------------------------------------


def _envelope(data: dict[str, Any], *, paginated: bool = False) -> dict[str, Any]:
    properties: dict[str, Any] = {
        "success": {"type": "boolean", "enum": [True]},
        "data": data,
        "meta": {"$ref": f"{_REF}Meta"},
    }
    required = ["success", "data", "meta"]
    if paginated:
        properties["pagination"] = {"$ref": f"{_REF}Pagination"}
        required.append("pagination")
    return {
        "type": "object",
        "properties": properties,
        "required": required,
        "additionalProperties": False,
    }


def shared_schemas() -> dict[str, dict[str, Any]]:
    """Envelope, error, pagination, query and batch schemas."""
    error_item = {
        "type": "object",
        "properties": {
            "code": {"type": "string", "description": "Protocol error code."},
            "message": {"type": "string"},
            "category": {"type": "string"},
            "details": {"type": "object"},
            "fieldErrors": {"type": "array", "items": {"$ref": f"{_REF}FieldError"}},
            "requestId": {"type": "string"},
        },
        "required": ["code", "message", "category", "details", "fieldErrors"],
        "additionalProperties": False,
    }
    record_result = {
        "type": "object",
        "properties": {
            "index": {"type": "integer", "minimum": 0},
            "operation": {"type": "string", "enum": ["create", "update", "upsert", "delete"]},
            "success": {"type": "boolean"},
            "status": {"type": "string", "enum": ["applied", "failed", "rolled_back"]},
            "id": {"type": ["string", "null"]},
            "data": {"type": "object"},
            "errors": {"type": "array", "items": {"$ref": f"{_REF}Error"}},
        },
        "required": ["index", "operation", "success", "status", "id"],
        "additionalProperties": False,
    }
    filter_schema = {
        "description": "Mongo-style filter ({field: {$op: value}}, $and/$or/$not) "
        "or the legacy array form.",
        "type": ["object", "array"],
    }
    return {
        "Meta": {
            "type": "object",
            "properties": {
                "timestamp": {"type": "string", "format": "date-time"},
                "duration": {"type": "number", "description": "Milliseconds."},
                "requestId": {"type": "string"},
                "traceId": {"type": "string"},
            },
            "required": ["timestamp"],
            "additionalProperties": False,
        },
        "Pagination": {
            "type": "object",
            "properties": {
                "total": {"type": ["integer", "null"], "description": "With count=true."},
                "limit": {"type": ["integer", "null"]},
                "offset": {"type": "integer"},
                "hasMore": {"type": "boolean"},
                "nextCursor": {"type": ["string", "null"], "description": "Pass as cursor."},
            },
            "required": ["total", "limit", "offset", "hasMore", "nextCursor"],
            "additionalProperties": False,
        },
        "FieldError": {
            "type": "object",
            "properties": {
                "field": {"type": "string"},
                "code": {"type": "string"},
                "message": {"type": "string"},
            },
            "required": ["field", "code", "message"],
            "additionalProperties": False,
        },
        "Error": error_item,
        "ErrorEnvelope": {
            "type": "object",
            "properties": {
                "success": {"type": "boolean", "enum": [False]},
                "error": {"$ref": f"{_REF}Error"},
            },
            "required": ["success", "error"],
            "additionalProperties": False,
        },
        "QueryAST": {
            "type": "object",
            "description": "A query (POST /data/{object}/query). With aggregations or groupBy "
            "the result is aggregate rows.",
            "properties": {
                "object": {"type": "string"},
                "fields": {"type": "array", "items": {"type": "string"}},
                "where": filter_schema,
                "search": {
                    "anyOf": [
                        {"type": "string"},
                        {
                            "type": "object",
                            "properties": {
                                "query": {"type": "string"},
                                "fields": {"type": "array", "items": {"type": "string"}},
                                "operator": {"type": "string", "enum": ["and", "or"]},
                            },
                        },
                    ]
                },
                "orderBy": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "properties": {
                            "field": {"type": "string"},
                            "order": {"type": "string", "enum": ["asc", "desc"]},
                        },
                        "required": ["field"],
                        "additionalProperties": False,
                    },
                },
                "limit": {"type": "integer", "minimum": 0, "maximum": MAX_LIMIT},
                "offset": {"type": "integer", "minimum": 0, "maximum": MAX_OFFSET},
                "cursor": {"type": ["string", "object"]},
                "expand": {"type": ["array", "object"]},
                "aggregations": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "properties": {
                            "function": {
                                "type": "string",
                                "enum": ["count", "sum", "avg", "min", "max", "count_distinct"],
                            },
                            "field": {"type": "string"},
                            "alias": {"type": "string"},
                            "distinct": {"type": "boolean"},
                            "filter": filter_schema,
                        },
                        "required": ["function"],
                        "additionalProperties": False,
                    },
                },
                "groupBy": {"type": "array", "items": {"type": "string"}},
                "count": {"type": "boolean"},
            },
            "additionalProperties": False,
        },
        "BatchOperation": {
            "type": "object",
            "properties": {
                "operation": {"type": "string", "enum": ["create", "update", "upsert", "delete"]},
                "id": {"type": "string"},
                "data": {"type": "object"},
                "expectedVersion": {"type": "integer"},
            },
            "required": ["operation"],
            "additionalProperties": False,
        },
        "BatchRequest": {
            "type": "object",
            "description": "operations (any kind) or records (creates); allOrNone defaults "
            "to true: one failure rolls everything back.",
            "properties": {
                "operations": {
                    "type": "array",
                    "items": {"$ref": f"{_REF}BatchOperation"},
                    "minItems": 1,
                },
                "records": {"type": "array", "items": {"type": "object"}, "minItems": 1},
                "allOrNone": {"type": "boolean", "default": True},
            },
            "additionalProperties": False,
        },
        "BatchEnvelope": _envelope(
            {
                "type": "object",
                "properties": {
                    "allOrNone": {"type": "boolean"},
                    "applied": {"type": "integer"},
                    "failed": {"type": "integer"},
                    "results": {"type": "array", "items": record_result},
                },
                "required": ["allOrNone", "applied", "failed", "results"],
                "additionalProperties": False,
            }
        ),
        "AggregateEnvelope": _envelope({"type": "array", "items": {"type": "object"}}),
        "DeleteEnvelope": _envelope(
            {
                "type": "object",
                "properties": {
                    "object": {"type": "string"},
                    "id": {"type": "string"},
                    "deleted": {"type": "boolean", "enum": [True]},
                    "version": {"type": ["integer", "null"]},
                },
                "required": ["object", "id", "deleted", "version"],
                "additionalProperties": False,
            }
        ),
        "MetaTypesEnvelope": _envelope(
            {
                "type": "object",
                "properties": {
                    "types": {
                        "type": "array",
                        "items": {
                            "type": "object",
                            "properties": {
                                "type": {"type": "string"},
                                "count": {"type": "integer"},
                                "href": {"type": "string"},
                            },
                            "required": ["type", "count", "href"],
                            "additionalProperties": False,
                        },
                    }
                },
                "required": ["types"],
                "additionalProperties": False,
            }
        ),
        "MetaListEnvelope": _envelope(
            {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {
                        "name": {"type": "string"},
                        "etag": {"type": "string"},
                        "definition": {"type": "object"},
                    },
                    "required": ["name", "etag", "definition"],
                    "additionalProperties": False,
                },
            }
        ),
        "MetaItemEnvelope": _envelope({"type": "object"}),
    }


# --- paths ----------------------------------------------------------------------------------


def _errors(statuses: tuple[str, ...]) -> dict[str, Any]:
    return {status: {"$ref": f"#/components/responses/Error{status}"} for status in statuses}


def _json_response(description: str, schema: str, headers: tuple[str, ...] = ()) -> dict[str, Any]:
    response: dict[str, Any] = {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": f"{_REF}{schema}"}}},
    }
    if headers:
        response["headers"] = {h: {"$ref": f"#/components/headers/{h}"} for h in headers}
    return response


def _body(schema: str, description: str) -> dict[str, Any]:
    return {
        "required": True,
        "description": f"{description} At most {MAX_BODY_BYTES} bytes of JSON.",
        "content": {"application/json": {"schema": {"$ref": f"{_REF}{schema}"}}},
    }


def _param(name: str, schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {
        "name": name,
        "in": "query",
        "required": False,
        "schema": schema,
        "description": description,
    }


def list_parameters(obj: ObjectSchema) -> list[dict[str, Any]]:
    """Query parameters of ``GET /data/{object}``."""
    params = [
        _param("filter", {"type": "string"}, 'JSON filter, e.g. {"amount": {"$gt": 100}}.'),
        _param("select", {"type": "string"}, "Comma-separated fields to return."),
        _param("sort", {"type": "string"}, 'Comma-separated fields, "-" for descending.'),
        _param("top", {"type": "integer", "minimum": 0, "maximum": MAX_LIMIT}, "Page size (50)."),
        _param(
            "skip", {"type": "integer", "minimum": 0, "maximum": MAX_OFFSET}, "Records to skip."
        ),
        _param("cursor", {"type": "string"}, "pagination.nextCursor of the previous page."),
        _param("expand", {"type": "string"}, "Comma-separated lookup fields to embed."),
        _param("search", {"type": "string"}, "Words to find in searchable fields."),
        _param("count", {"type": "boolean"}, "Include pagination.total."),
    ]
    for name, fld in obj.fields.items():
        if name in RESERVED_PARAMS or fld.type in (
            FieldType.PASSWORD,
            FieldType.JSON,
            FieldType.ADDRESS,
            FieldType.LOCATION,
        ):
            continue
        params.append(_param(name, {"type": "string"}, f"Only records whose {name} equals this."))
    return params


def _record_params() -> list[dict[str, Any]]:
    return [
        {
            "name": "id",
            "in": "path",
            "required": True,
            "schema": {"type": "string"},
            "description": "Record id.",
        }
    ]


def _if_match() -> dict[str, Any]:
    return {
        "name": "If-Match",
        "in": "header",
        "required": False,
        "schema": {"type": "string"},
        "description": 'The ETag you read ("<version>"): 409 if the record changed since.',
    }


def object_paths(obj: ObjectSchema) -> dict[str, dict[str, Any]]:
    """The paths of one object, with only the operations it allows."""
    name, title = obj.name, obj.label or obj.name
    tags = [name]
    paths: dict[str, dict[str, Any]] = {}
    collection: dict[str, Any] = {}
    if obj.allows("list"):
        collection["get"] = {
            "tags": tags,
            "operationId": f"list_{name}",
            "summary": f"List {obj.pluralLabel or title}",
            "parameters": list_parameters(obj),
            "responses": {
                "200": _json_response("One page of records.", f"{name}.ListEnvelope"),
                **_errors(_READ_ERRORS),
            },
        }
    if obj.allows("create"):
        collection["post"] = {
            "tags": tags,
            "operationId": f"create_{name}",
            "summary": f"Create a {title}",
            "requestBody": _body(f"{name}.Create", "The new record's fields."),
            "responses": {
                "201": _json_response(
                    "Created.", f"{name}.Envelope", ("ETag", "Location", "X-Request-ID")
                ),
                **_errors(_WRITE_ERRORS),
            },
        }
    if collection:
        paths[f"{DATA_BASE}/{name}"] = collection
    record: dict[str, Any] = {}
    if obj.allows("get"):
        record["get"] = {
            "tags": tags,
            "operationId": f"get_{name}",
            "summary": f"Read a {title}",
            "parameters": [
                _param("select", {"type": "string"}, "Comma-separated fields to return."),
                _param("expand", {"type": "string"}, "Comma-separated lookup fields to embed."),
                {
                    "name": "If-None-Match",
                    "in": "header",
                    "required": False,
                    "schema": {"type": "string"},
                    "description": "304 when the record's ETag matches.",
                },
            ],
            "responses": {
                "200": _json_response("The record.", f"{name}.Envelope", ("ETag",)),
                "304": {"description": "Not modified (the ETag matches)."},
                **_errors(_READ_ERRORS),
            },
        }
    if obj.allows("update"):
        record["patch"] = {
            "tags": tags,
            "operationId": f"update_{name}",
            "summary": f"Change a {title}",
            "parameters": [_if_match()],
            "requestBody": _body(f"{name}.Update", "The fields to change."),
            "responses": {
                "200": _json_response("The changed record.", f"{name}.Envelope", ("ETag",)),
                **_errors(_WRITE_ERRORS),
            },
        }
    if obj.allows("delete"):
        record["delete"] = {
            "tags": tags,
            "operationId": f"delete_{name}",
            "summary": f"Delete a {title}",
            "parameters": [
                _if_match(),
                _param("version", {"type": "integer", "minimum": 1}, "Like If-Match."),
            ],
            "responses": {
                "200": _json_response("Deleted.", "DeleteEnvelope"),
                **_errors(_WRITE_ERRORS),
            },
        }
    if record:
        record["parameters"] = _record_params()
        paths[f"{DATA_BASE}/{name}/{{id}}"] = record
    if obj.allows("list") or obj.allows("aggregate"):
        paths[f"{DATA_BASE}/{name}/query"] = {
            "post": {
                "tags": tags,
                "operationId": f"query_{name}",
                "summary": f"Query {obj.pluralLabel or title} (QueryAST)",
                "requestBody": _body("QueryAST", "The query."),
                "responses": {
                    "200": {
                        "description": "Records (with pagination) or aggregate rows.",
                        "content": {
                            "application/json": {
                                "schema": {
                                    "oneOf": [
                                        {"$ref": f"{_REF}{name}.ListEnvelope"},
                                        {"$ref": f"{_REF}AggregateEnvelope"},
                                    ]
                                }
                            }
                        },
                    },
                    **_errors(_WRITE_ERRORS),
                },
            }
        }
    if obj.allows("bulk"):
        paths[f"{DATA_BASE}/{name}/batch"] = {
            "post": {
                "tags": tags,
                "operationId": f"batch_{name}",
                "summary": f"Create, update, upsert or delete many {obj.pluralLabel or title}",
                "requestBody": _body("BatchRequest", "The operations."),
                "responses": {
                    "200": _json_response("What happened to each operation.", "BatchEnvelope"),
                    **_errors(_WRITE_ERRORS),
                },
            }
        }
    return paths


def meta_paths() -> dict[str, dict[str, Any]]:
    """``/api/v1/meta``, ``/meta/{type}``, ``/meta/{type}/{name}``."""
    none_match = {
        "name": "If-None-Match",
        "in": "header",
        "required": False,
        "schema": {"type": "string"},
        "description": "304 when the ETag matches.",
    }
    kind = {
        "name": "type",
        "in": "path",
        "required": True,
        "schema": {"type": "string"},
        "description": f"One of {', '.join(KINDS)}.",
    }
    not_modified = {"304": {"description": "Not modified (the ETag matches)."}}
    return {
        META_BASE: {
            "get": {
                "tags": ["metadata"],
                "operationId": "meta_types",
                "summary": "Metadata types and how many items each has",
                "responses": {
                    "200": _json_response("The types.", "MetaTypesEnvelope"),
                    **_errors(_READ_ERRORS),
                },
            }
        },
        f"{META_BASE}/{{type}}": {
            "get": {
                "tags": ["metadata"],
                "operationId": "meta_list",
                "summary": "Every item of one metadata type",
                "parameters": [kind, none_match],
                "responses": {
                    "200": _json_response("The items.", "MetaListEnvelope", ("ETag",)),
                    **not_modified,
                    **_errors(_READ_ERRORS),
                },
            }
        },
        f"{META_BASE}/{{type}}/{{name}}": {
            "get": {
                "tags": ["metadata"],
                "operationId": "meta_item",
                "summary": "One metadata item",
                "parameters": [
                    kind,
                    {"name": "name", "in": "path", "required": True, "schema": {"type": "string"}},
                    none_match,
                ],
                "responses": {
                    "200": _json_response("The item.", "MetaItemEnvelope", ("ETag",)),
                    **not_modified,
                    **_errors(_READ_ERRORS),
                },
            }
        },
    }


def permissions_paths() -> dict[str, dict[str, Any]]:
    """``POST /api/v1/permissions/check`` (:mod:`objectos.api.permissions`)."""
    text = {"type": "string", "minLength": 1}
    request = {
        "type": "object",
        "additionalProperties": False,
        "required": ["action", "object"],
        "properties": {
            "action": {"type": "string", "enum": ["read", "create", "edit", "delete"]},
            "object": text,
            "recordId": text,
            "field": text,
            "userId": {
                **text,
                "description": "Ask about another user (needs view_all_data or modify_all_data).",
            },
        },
    }
    decision = {
        "type": "object",
        "required": ["allowed", "reasons", "action", "object", "userId"],
        "properties": {
            "allowed": {"type": "boolean"},
            "reasons": {"type": "array", "items": {"type": "string"}},
            "action": {"type": "string"},
            "object": {"type": "string"},
            "recordId": {"type": "string"},
            "field": {"type": "string"},
            "userId": {"type": ["string", "null"]},
        },
    }
    return {
        f"{API_BASE}/permissions/check": {
            "post": {
                "tags": ["permissions"],
                "operationId": "permissions_check",
                "summary": "May a user do this (object, record, field), and why",
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": request}},
                },
                "responses": {
                    "200": {
                        "description": "The decision; a denial is allowed: false.",
                        "content": {"application/json": {"schema": _envelope(decision)}},
                    },
                    **_errors(("400", "401", "403", "404", "429", "500", "503")),
                },
            }
        }
    }


def realtime_paths(objects: list[str]) -> dict[str, dict[str, Any]]:
    """``GET /api/v1/realtime/sse`` and ``/poll`` (:mod:`objectos.api.sse`) for ``objects``."""
    event = {
        "type": "object",
        "description": "A record event, the payload of the Socket.IO /realtime ``event``.",
        "required": [
            "subscriptionId",
            "eventName",
            "object",
            "recordId",
            "record",
            "changedFields",
            "version",
            "cursor",
            "timestamp",
        ],
        "properties": {
            "subscriptionId": {"type": "string"},
            "eventName": {
                "type": "string",
                "enum": ["record.created", "record.updated", "record.deleted", "field.changed"],
            },
            "object": {"type": "string", "enum": objects},
            "recordId": {"type": "string"},
            "record": {"type": "object", "description": "Only the fields the caller may read."},
            "changedFields": {"type": "array", "items": {"type": "string"}},
            "version": {"type": "integer"},
            "cursor": {"type": "integer", "description": "Send it back as since."},
            "timestamp": {"type": "string", "format": "date-time"},
        },
    }
    names = ", ".join(objects) or "none"
    subscription = [
        {
            "name": "objects",
            "in": "query",
            "required": True,
            "schema": {"type": "string"},
            "description": f"Comma-separated objects ({names}).",
        },
        _param(
            "events",
            {"type": "string"},
            "Comma-separated: record.created, record.updated, record.deleted, field.changed, "
            "record.* (the default).",
        ),
        _param("filter", {"type": "string"}, "JSON filter on the records (readable fields)."),
        _param(
            "since",
            {"type": "integer", "minimum": 0},
            "Cursor: events after it are replayed first (default: only new events).",
        ),
        _param("subscriptionId", {"type": "string"}, "Echoed in every event (default sse)."),
        _param(
            "access_token",
            {"type": "string"},
            "The bearer token, for clients that cannot send headers (EventSource).",
        ),
    ]
    errors = _errors(("400", "401", "404", "429", "500", "503"))
    poll = {
        "type": "object",
        "required": ["events", "cursor", "hasMore", "subscriptionId"],
        "properties": {
            "events": {"type": "array", "items": event},
            "cursor": {"type": "integer", "description": "The next poll's since."},
            "hasMore": {"type": "boolean", "description": "Cut short: poll again at once."},
            "subscriptionId": {"type": "string"},
        },
    }
    return {
        SSE_PATH: {
            "get": {
                "tags": ["realtime"],
                "operationId": "realtime_sse",
                "summary": "Record events as Server-Sent Events",
                "description": "Each event is a data: frame holding the event JSON; the last "
                "event of a change has id: <cursor>, so EventSource's Last-Event-ID (which "
                "wins over since) resumes without gap or duplicate. event: subscribed marks "
                "where the replay ends.",
                "parameters": [
                    *subscription,
                    {
                        "name": "Last-Event-ID",
                        "in": "header",
                        "required": False,
                        "schema": {"type": "string"},
                        "description": "The last id received (sent by EventSource).",
                    },
                ],
                "responses": {
                    "200": {
                        "description": "The stream.",
                        "content": {"text/event-stream": {"schema": {"type": "string"}}},
                    },
                    **errors,
                },
            }
        },
        POLL_PATH: {
            "get": {
                "tags": ["realtime"],
                "operationId": "realtime_poll",
                "summary": "Record events by long polling",
                "description": "The events after since; when there are none, waits up to "
                "timeout for the next ones. Send cursor back as since.",
                "parameters": [
                    *subscription,
                    _param(
                        "timeout",
                        {"type": "number", "minimum": 0, "maximum": 60},
                        "Seconds to wait for an event (25; 0 answers at once).",
                    ),
                ],
                "responses": {
                    "200": {
                        "description": "The events and the next cursor.",
                        "content": {"application/json": {"schema": _envelope(poll)}},
                    },
                    **errors,
                },
            }
        },
    }


# --- the document ---------------------------------------------------------------------------


def openapi_document(
    registry: MetadataRegistry,
    *,
    title: str = "ObjectOS Hub",
    version: str = "0.1.0",
    description: str | None = None,
    auth_required: bool = False,
    permissions: bool = False,
    realtime: bool = False,
) -> dict[str, Any]:
    """The OpenAPI 3.1 document of the data and metadata API for ``registry``.

    ``auth_required``: every data route needs a bearer token (else it is
    optional); ``permissions``: describe ``POST /api/v1/permissions/check``;
    ``realtime``: describe the SSE and long-polling routes.
    """
    schemas = shared_schemas()
    paths: dict[str, Any] = {}
    tags = []
    for name in sorted(registry.objects):
        obj = registry.objects[name]
        if not obj.enable.apiEnabled:
            continue
        schemas.update(object_schemas(obj))
        paths.update(object_paths(obj))
        tags.append({"name": name, "description": obj.description or obj.label or name})
    paths.update(meta_paths())
    paths[OPENAPI_PATH] = {
        "get": {
            "tags": ["metadata"],
            "operationId": "openapi",
            "summary": "This document",
            "security": [],
            "responses": {
                "200": {
                    "description": "OpenAPI 3.1.",
                    "content": {"application/json": {"schema": {"type": "object"}}},
                }
            },
        }
    }
    tags.append({"name": "metadata", "description": "Object and other metadata, with ETags."})
    if permissions:
        paths.update(permissions_paths())
        tags.append({"name": "permissions", "description": "Why a caller may or may not act."})
    if realtime:
        objects = [
            name for name in sorted(registry.objects) if registry.objects[name].enable.apiEnabled
        ]
        paths.update(realtime_paths(objects))
        tags.append({"name": "realtime", "description": "Record events over HTTP."})
    responses = {
        f"Error{status}": {
            "description": text,
            "content": {"application/json": {"schema": {"$ref": f"{_REF}ErrorEnvelope"}}},
        }
        for status, text in _ERROR_STATUSES.items()
    }
    responses["Error405"]["headers"] = {"Allow": {"$ref": "#/components/headers/Allow"}}
    responses["Error429"]["headers"] = {"Retry-After": {"$ref": "#/components/headers/Retry-After"}}
    headers = {
        "ETag": {"description": "Version tag of the resource.", "schema": {"type": "string"}},
        "Location": {"description": "URL of the created record.", "schema": {"type": "string"}},
        "X-Request-ID": {"description": "Id of this request.", "schema": {"type": "string"}},
        "Allow": {"description": "Methods the path supports.", "schema": {"type": "string"}},
        "Retry-After": {"description": "Seconds to wait.", "schema": {"type": "string"}},
    }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": title,
            "version": version,
            "description": description
            or "REST API generated from the hub's object metadata (PROTOCOL.md).",
        },
        "jsonSchemaDialect": "https://spec.openapis.org/oas/3.1/dialect/base",
        "tags": tags,
        "paths": paths,
        "components": {
            "schemas": schemas,
            "responses": responses,
            "headers": headers,
            "securitySchemes": {
                "bearerAuth": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}
            },
        },
        # Bearer JWT, or none while the app runs the anonymous authenticator.
        "security": [{"bearerAuth": []}] if auth_required else [{"bearerAuth": []}, {}],
    }


def downgrade_to_30(document: Mapping[str, Any]) -> dict[str, Any]:
    """The same API as OpenAPI 3.0.3 (``nullable``, no ``null`` type), for 3.0-only tools."""
    doc = copy.deepcopy(dict(document))
    doc["openapi"] = "3.0.3"
    doc.pop("jsonSchemaDialect", None)
    doc.pop("webhooks", None)
    for schema in doc.get("components", {}).get("schemas", {}).values():
        _downgrade_schema(schema)
    for path in doc.get("paths", {}).values():
        _walk_schemas(path)
    for response in doc.get("components", {}).get("responses", {}).values():
        _walk_schemas(response)
    return doc


def _walk_schemas(node: Any) -> None:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "schema" and isinstance(value, dict):
                _downgrade_schema(value)
            else:
                _walk_schemas(value)
    elif isinstance(node, list):
        for item in node:
            _walk_schemas(item)


def _downgrade_schema(schema: dict[str, Any]) -> None:
    kind = schema.get("type")
    if isinstance(kind, list):
        types = [t for t in kind if t != "null"]
        if "null" in kind:
            schema["nullable"] = True
        if len(types) == 1:
            schema["type"] = types[0]
        else:
            del schema["type"]
            schema["anyOf"] = [{"type": t} for t in types]
    if "anyOf" in schema:
        options = [o for o in schema["anyOf"] if o != {"type": "null"}]
        if len(options) != len(schema["anyOf"]):
            schema["nullable"] = True
        schema["anyOf"] = options
    for key in ("properties",):
        for child in (schema.get(key) or {}).values():
            if isinstance(child, dict):
                _downgrade_schema(child)
    for key in ("items", "additionalProperties"):
        child = schema.get(key)
        if isinstance(child, dict):
            _downgrade_schema(child)
    for key in ("anyOf", "oneOf", "allOf"):
        for child in schema.get(key) or ():
            if isinstance(child, dict):
                _downgrade_schema(child)
    if "$ref" in schema and len(schema) > 1:
        # 3.0 ignores siblings of $ref; keep the reference, drop the rest.
        ref = schema["$ref"]
        schema.clear()
        schema["$ref"] = ref


class OpenAPIDocuments:
    """The documents for the current metadata, rebuilt only when the registry changes."""

    def __init__(
        self,
        registry: RegistrySource,
        *,
        title: str,
        version: str,
        auth_required: bool = False,
        permissions: bool = False,
        realtime: bool = False,
    ) -> None:
        """Serve documents for ``registry`` (or an async callable returning it);
        the flags are :func:`openapi_document`'s."""
        self.registry_source = registry
        self.title = title
        self.version = version
        self.auth_required = auth_required
        self.permissions = permissions
        self.realtime = realtime
        self._cache: dict[str, tuple[tuple[int, int], dict[str, Any], str]] = {}

    async def registry(self) -> MetadataRegistry:
        """The current registry."""
        if isinstance(self.registry_source, MetadataRegistry):
            return self.registry_source
        return await self.registry_source()

    async def document(self, dialect: str = "3.1") -> tuple[dict[str, Any], str]:
        """``(document, etag)`` of the current metadata for ``dialect`` 3.1 or 3.0."""
        registry = await self.registry()
        key = (id(registry), registry.version)
        cached = self._cache.get(dialect)
        if cached is None or cached[0] != key:
            document = openapi_document(
                registry,
                title=self.title,
                version=self.version,
                auth_required=self.auth_required,
                permissions=self.permissions,
                realtime=self.realtime,
            )
            if dialect == "3.0":
                document = downgrade_to_30(document)
            cached = (key, document, content_etag(document))
            self._cache[dialect] = cached
        return cached[1], cached[2]


def openapi_routes(
    registry: RegistrySource,
    *,
    title: str = "ObjectOS Hub",
    version: str = "0.1.0",
    auth_required: bool = False,
    permissions: bool = False,
    realtime: bool = False,
) -> list[Route]:
    """``GET /api/v1/openapi.json`` (3.1) and ``/api/v1/openapi-3.0.json`` (for Swagger UI 4);
    the flags are :func:`openapi_document`'s."""
    documents = OpenAPIDocuments(
        registry,
        title=title,
        version=version,
        auth_required=auth_required,
        permissions=permissions,
        realtime=realtime,
    )

    def endpoint(dialect: str) -> Callable[[Request], Awaitable[Response]]:
        async def serve(request: Request) -> Response:
            try:
                document, etag = await documents.document(dialect)
            except Exception as exc:
                return error_response(request, exc)
            if etag_matches(request.headers.get("if-none-match"), etag):
                return Response(status_code=304, headers={"ETag": etag})
            return JSONResponse(document, headers={"ETag": etag})

        return serve

    return [
        Route(OPENAPI_PATH, endpoint("3.1"), methods=["GET"]),
        Route(OPENAPI_30_PATH, endpoint("3.0"), methods=["GET"]),
    ]


__all__ = [
    "OPENAPI_30_PATH",
    "OPENAPI_PATH",
    "OpenAPIDocuments",
    "downgrade_to_30",
    "field_schema",
    "list_parameters",
    "meta_paths",
    "object_paths",
    "object_schemas",
    "openapi_document",
    "openapi_routes",
    "permissions_paths",
    "realtime_paths",
    "shared_schemas",
]
