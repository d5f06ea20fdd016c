"""The REST data and metadata routes of PROTOCOL.md, as plain Starlette routes.

::

    routes = data_routes(engine, registry, AnonymousAuthenticator())
    app = Starlette(routes=routes, middleware=hub_middleware(), exception_handlers=...)

=======================================  =================================================
``GET    /api/v1/data/{object}``         list: ``filter select sort top skip cursor
                                         expand search count`` and ``field=value``
``POST   /api/v1/data/{object}``         create (201, ``Location``, ``ETag``)
``GET    /api/v1/data/{object}/{id}``    one record (``select``, ``expand``; ``ETag``,
                                         ``If-None-Match`` → 304)
``PATCH  /api/v1/data/{object}/{id}``    change fields (``If-Match`` or ``version``)
``DELETE /api/v1/data/{object}/{id}``    delete (``If-Match`` or ``?version=``)
``POST   /api/v1/data/{object}/query``   QueryAST body (find, or aggregate)
``POST   /api/v1/data/{object}/batch``   ``{operations|records, allOrNone}``
``GET    /api/v1/meta[/{type}[/{name}]]`` metadata with ``ETag``; ``If-None-Match`` → 304
=======================================  =================================================

**Objects.** An object with ``enable.apiEnabled: false`` does not exist here
(404 ``object_not_found``, also in ``/meta``); an operation missing from
``enable.apiMethods`` is 405 with an ``Allow`` header naming what the path
does support.

**Concurrency.** Record responses carry ``ETag: "<version>"``. A write with
``If-Match: "<version>"`` (or a ``version`` field in a PATCH body, or
``?version=`` on DELETE) fails with 409 ``concurrent_modification`` when the
record moved on; nothing is written.

**Input.** A body must be one JSON object of at most ``max_body_bytes`` (413
``payload_too_large`` above it), text without NUL characters or lone
surrogates (no database stores them the same way); a bad body is a 400
``validation_error`` naming the reason. Every write is one transaction in the
engine, so a refused write leaves nothing behind.

**Collaborators.** ``service`` has :class:`~objectos.data.DataEngine`'s method
signatures (:class:`DataService`), so a permission-checking wrapper can
replace the engine without touching these routes; ``authenticate`` turns a
request into an :class:`~objectos.data.Actor` (:class:`Authenticator`).
"""

from __future__ import annotations

import decimal
import json
import logging
import re
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from objectos.api.discovery import API_BASE
from objectos.api.envelope import error_response, respond
from objectos.data.actor import Actor
from objectos.data.engine import BatchOperation, BatchResult, FindResult, Scope
from objectos.data.query import QuerySpec, parse_list_params, parse_query_ast
from objectos.data.values import valid_id
from objectos.errors import (
    InvalidField,
    InvalidFilter,
    MethodNotAllowed,
    NotFound,
    ObjectNotFound,
    ObjectOSError,
    PayloadTooLarge,
    RecordNotFound,
    ValidationError,
)
from objectos.metadata.loader import KINDS, MetadataItem, content_etag
from objectos.metadata.registry import MetadataRegistry
from objectos.protocol.object import ObjectSchema

logger = logging.getLogger("objectos.api.rest")

MAX_BODY_BYTES = 1024 * 1024
"""Largest request body accepted, in bytes (1 MiB)."""

MAX_OFFSET = 1_000_000_000
"""Largest ``skip`` accepted: databases overflow on offsets beyond 64 bits."""

MAX_BATCH_OPERATIONS = 500
"""Most operations in one batch request."""

DATA_BASE = f"{API_BASE}/data"
META_BASE = f"{API_BASE}/meta"

#: Query parameters of ``GET /data/{object}/{id}``.
_RECORD_PARAMS = {
    "select": "fields",
    "fields": "fields",
    "$select": "fields",
    "expand": "expand",
    "populate": "expand",
    "$expand": "expand",
}
_BATCH_KEYS = frozenset({"operations", "records", "allOrNone"})
_ETAG = re.compile(r'^"(\d{1,18})"$')


# --- collaborators ----------------------------------------------------------------------------


@runtime_checkable
class DataService(Protocol):
    """What the routes need from the data layer: :class:`~objectos.data.DataEngine`'s methods."""

    async def find(
        self,
        object_name: str,
        spec: QuerySpec | None = None,
        *,
        actor: Actor,
        scope: Scope | None = None,
    ) -> FindResult: ...

    async def find_one(
        self,
        object_name: str,
        record_id: str,
        *,
        actor: Actor,
        fields: Sequence[str] | None = None,
        expand: Sequence[str] = (),
        scope: Scope | None = None,
    ) -> dict[str, Any]: ...

    async def count(
        self,
        object_name: str,
        where: QuerySpec | Mapping[str, Any] | None = None,
        *,
        actor: Actor,
        scope: Scope | None = None,
    ) -> int: ...

    async def aggregate(
        self,
        object_name: str,
        spec: QuerySpec,
        *,
        actor: Actor,
        scope: Scope | None = None,
    ) -> list[dict[str, Any]]: ...

    async def insert(
        self,
        object_name: str,
        data: Mapping[str, Any],
        *,
        actor: Actor,
        scope: Scope | None = None,
    ) -> dict[str, Any]: ...

    async def update(
        self,
        object_name: str,
        record_id: str,
        changes: Mapping[str, Any],
        *,
        actor: Actor,
        expected_version: int | None = None,
        scope: Scope | None = None,
    ) -> dict[str, Any]: ...

    async def delete(
        self,
        object_name: str,
        record_id: str,
        *,
        actor: Actor,
        expected_version: int | None = None,
        scope: Scope | None = None,
    ) -> dict[str, Any]: ...

    async def batch(
        self,
        object_name: str,
        operations: Sequence[BatchOperation | Mapping[str, Any]],
        *,
        actor: Actor,
        all_or_none: bool = True,
        scope: Scope | None = None,
    ) -> list[BatchResult]: ...


class Authenticator(Protocol):
    """Who is calling: ``await authenticate(request)`` → Actor, or raise Unauthenticated."""

    async def __call__(self, request: Request) -> Actor: ...


class AnonymousAuthenticator:
    """Every request acts as one fixed, non-system user (``anonymous`` by default).

    A stand-in until the identity routes provide a JWT authenticator: it
    checks nothing, so a hub using it must not be reachable by people who
    should not read and write its data. It never returns a system actor, so
    readonly fields and ``owner`` stay closed to clients even now.
    """

    def __init__(self, user_id: str = "anonymous", roles: Iterable[str] = ()) -> None:
        """Act as ``user_id`` with ``roles`` for every request."""
        self.actor = Actor.user(user_id, roles)

    async def __call__(self, request: Request) -> Actor:
        return self.actor


#: The registry itself, or an async callable returning the current one (it may raise
#: ServiceUnavailable while the data layer is starting).
RegistrySource = MetadataRegistry | Callable[[], Awaitable[MetadataRegistry]]


# --- small helpers ------------------------------------------------------------------------------


def record_etag(record: Mapping[str, Any]) -> str | None:
    """The ETag of a record: its version, quoted (None when the record has none)."""
    version = record.get("version")
    return f'"{version}"' if isinstance(version, int) and not isinstance(version, bool) else None


def etag_matches(header: str | None, etag: str) -> bool:
    """Whether an ``If-None-Match`` header matches ``etag`` (weak comparison, ``*``)."""
    if not header:
        return False
    bare = etag.removeprefix("W/")
    for candidate in header.split(","):
        candidate = candidate.strip()
        if candidate == "*" or candidate.removeprefix("W/") == bare:
            return True
    return False


def _expected_version(header: str | None) -> int | None:
    """The version an ``If-Match`` header demands (None for ``*`` or no header)."""
    if header is None:
        return None
    value = header.strip()
    if value == "*":
        return None
    match = _ETAG.match(value)
    if match is None:
        raise ValidationError(
            'If-Match must be one record ETag ("<version>", as this API sends it) or *',
            details={"header": "If-Match", "reason": "not an ETag of this API"},
            field_errors=[],
        )
    return int(match.group(1))


def _check_text(value: str, where: str) -> None:
    if "\x00" in value:
        raise ValidationError(
            f"{where} contains a NUL character, which text cannot hold",
            details={"reason": "NUL character", "location": where},
        )
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValidationError(
            f"{where} contains a lone surrogate; text must be valid Unicode",
            details={"reason": "invalid unicode", "location": where},
        ) from None


def check_json_text(value: Any, where: str = "request body") -> None:
    """Refuse NUL characters and lone surrogates anywhere in a parsed JSON value."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            _check_text(item, where)
        elif isinstance(item, dict):
            for key, child in item.items():
                _check_text(key, where)
                stack.append(child)
        elif isinstance(item, list):
            stack.extend(item)


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


async def read_json_object(request: Request, limit: int = MAX_BODY_BYTES) -> dict[str, Any]:
    """The request body as a JSON object, or ValidationError / PayloadTooLarge saying why."""
    content_type = request.headers.get("content-type")
    if content_type:
        media = content_type.split(";", 1)[0].strip().lower()
        if media != "application/json" and not media.endswith("+json"):
            raise ValidationError(
                f"the request body must be JSON (Content-Type: application/json), not {media!r}",
                details={"reason": "unsupported content type", "contentType": media},
            )
    too_large = PayloadTooLarge(
        f"the request body is larger than {limit} bytes",
        details={"limit": limit, "reason": "body too large"},
    )
    length = request.headers.get("content-length", "")
    if length.isdigit() and int(length) > limit:
        raise too_large
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise too_large
        chunks.append(chunk)
    raw = b"".join(chunks)
    if not raw.strip():
        raise ValidationError(
            "the request body is empty; expected a JSON object", details={"reason": "empty body"}
        )
    try:
        value = json.loads(raw, parse_constant=_refuse_constant)
    except UnicodeDecodeError:
        raise ValidationError(
            "the request body is not UTF-8 text", details={"reason": "invalid encoding"}
        ) from None
    except json.JSONDecodeError as exc:
        raise ValidationError(
            f"the request body is not valid JSON: {exc.msg} (line {exc.lineno}, "
            f"column {exc.colno})",
            details={"reason": "invalid JSON", "line": exc.lineno, "column": exc.colno},
        ) from None
    except (ValueError, RecursionError) as exc:
        reason = str(exc) if isinstance(exc, ValueError) else "nested too deeply"
        raise ValidationError(
            f"the request body is not valid JSON: {reason}", details={"reason": "invalid JSON"}
        ) from None
    if not isinstance(value, dict):
        raise ValidationError(
            f"the request body must be a JSON object, not {type(value).__name__}",
            details={"reason": "expected an object"},
        )
    check_json_text(value)
    return value


def query_params(request: Request) -> dict[str, str]:
    """The query string as a dict; a parameter given twice is an error, not a guess."""
    params: dict[str, str] = {}
    for name, value in request.query_params.multi_items():
        if name in params:
            raise InvalidFilter(
                f"query parameter {name!r} is given more than once",
                details={"parameter": name, "reason": "repeated parameter"},
            )
        _check_text(name, "a query parameter name")
        _check_text(value, f"query parameter {name!r}")
        params[name] = value
    return params


# --- the routes ----------------------------------------------------------------------------


# REST operation (ObjectSchema.allows / apiMethods) → HTTP method, per path shape.
_COLLECTION = {"list": "GET", "create": "POST"}
_RECORD = {"get": "GET", "update": "PATCH", "delete": "DELETE"}
_QUERY = {"list": "POST", "aggregate": "POST"}
_BATCH = {"bulk": "POST"}


def _allowed(obj: ObjectSchema, shape: Mapping[str, str]) -> list[str]:
    return sorted({http for op, http in shape.items() if obj.allows(op)})


class _DataAPI:
    def __init__(
        self,
        service: DataService,
        registry: RegistrySource,
        authenticate: Authenticator,
        max_body_bytes: int,
        max_batch: int,
    ) -> None:
        self.service = service
        self.registry_source = registry
        self.authenticate = authenticate
        self.max_body_bytes = max_body_bytes
        self.max_batch = max_batch

    async def registry(self) -> MetadataRegistry:
        if isinstance(self.registry_source, MetadataRegistry):
            return self.registry_source
        return await self.registry_source()

    async def object(self, name: str, operation: str, shape: Mapping[str, str]) -> ObjectSchema:
        """The object ``name`` if the API serves it, and ``operation`` on it; else 404/405."""
        obj = visible_object(await self.registry(), name)
        if not obj.allows(operation):
            raise MethodNotAllowed(
                f"{operation} is not enabled for {name} (enable.apiMethods)",
                details={"object": name, "operation": operation, "allow": _allowed(obj, shape)},
            )
        return obj

    # -- collection -----

    async def list_records(self, request: Request) -> Response:
        name = request.path_params["object"]
        await self.object(name, "list", _COLLECTION)
        spec = _checked(parse_list_params(query_params(request)))
        actor = await self.authenticate(request)
        result = await self.service.find(name, spec, actor=actor)
        return respond(request, result.records, pagination=result.pagination())

    async def create_record(self, request: Request) -> Response:
        name = request.path_params["object"]
        await self.object(name, "create", _COLLECTION)
        actor = await self.authenticate(request)
        body = await read_json_object(request, self.max_body_bytes)
        record = await self.service.insert(name, body, actor=actor)
        headers = {"Location": f"{DATA_BASE}/{name}/{record['id']}"}
        etag = record_etag(record)
        if etag:
            headers["ETag"] = etag
        return respond(request, record, status=201, headers=headers)

    # -- one record -----

    async def get_record(self, request: Request) -> Response:
        name, record_id = request.path_params["object"], request.path_params["id"]
        await self.object(name, "get", _RECORD)
        wanted: dict[str, list[str]] = {}
        for param, value in query_params(request).items():
            key = _RECORD_PARAMS.get(param)
            if key is None:
                raise InvalidFilter(
                    f"unknown query parameter {param!r} (a record takes select and expand)",
                    details={"parameter": param, "reason": "unknown parameter"},
                )
            if key in wanted:
                raise InvalidFilter(
                    f"parameter {param!r} repeats {key}",
                    details={"parameter": param, "reason": "repeated parameter"},
                )
            wanted[key] = [v.strip() for v in value.split(",") if v.strip()]
        actor = await self.authenticate(request)
        _known_id(name, record_id)
        fields = wanted.get("fields") or None
        # The ETag needs the version even when the client did not select it.
        fetch = None if fields is None else list(dict.fromkeys([*fields, "version"]))
        record = await self.service.find_one(
            name, record_id, actor=actor, fields=fetch, expand=wanted.get("expand") or ()
        )
        etag = record_etag(record)
        if fields is not None and "version" not in fields:
            record.pop("version", None)
        headers = {"ETag": etag} if etag else {}
        if etag and etag_matches(request.headers.get("if-none-match"), etag):
            return Response(status_code=304, headers=headers)
        return respond(request, record, headers=headers)

    async def update_record(self, request: Request) -> Response:
        name, record_id = request.path_params["object"], request.path_params["id"]
        await self.object(name, "update", _RECORD)
        actor = await self.authenticate(request)
        body = await read_json_object(request, self.max_body_bytes)
        expected = _expected_version(request.headers.get("if-match"))
        if "version" in body:
            version = body.pop("version")
            if not isinstance(version, int) or isinstance(version, bool) or version < 1:
                raise InvalidField(
                    "version must be a positive integer (the version you read)",
                    details={"field": "version"},
                )
            if expected is not None and expected != version:
                raise ValidationError(
                    f"If-Match asks for version {expected} but the body says {version}",
                    details={"reason": "conflicting versions", "field": "version"},
                )
            expected = version
        _known_id(name, record_id)
        record = await self.service.update(
            name, record_id, body, actor=actor, expected_version=expected
        )
        etag = record_etag(record)
        return respond(request, record, headers={"ETag": etag} if etag else None)

    async def delete_record(self, request: Request) -> Response:
        name, record_id = request.path_params["object"], request.path_params["id"]
        await self.object(name, "delete", _RECORD)
        actor = await self.authenticate(request)
        params = query_params(request)
        unknown = set(params) - {"version"}
        if unknown:
            param = sorted(unknown)[0]
            raise InvalidFilter(
                f"unknown query parameter {param!r} (a delete takes version)",
                details={"parameter": param, "reason": "unknown parameter"},
            )
        expected = _expected_version(request.headers.get("if-match"))
        if "version" in params:
            text = params["version"].strip()
            if not text.isdigit() or int(text) < 1 or len(text) > 18:
                raise InvalidFilter(
                    "version must be a positive integer",
                    details={"parameter": "version", "reason": "expected a positive integer"},
                )
            if expected is not None and expected != int(text):
                raise ValidationError(
                    f"If-Match asks for version {expected} but ?version= says {text}",
                    details={"reason": "conflicting versions"},
                )
            expected = int(text)
        _known_id(name, record_id)
        last = await self.service.delete(name, record_id, actor=actor, expected_version=expected)
        data = {"object": name, "id": record_id, "deleted": True, "version": last.get("version")}
        return respond(request, data)

    # -- query and batch -----

    async def query(self, request: Request) -> Response:
        name = request.path_params["object"]
        obj = visible_object(await self.registry(), name)
        if not (obj.allows("list") or obj.allows("aggregate")):
            await self.object(name, "list", _QUERY)  # raises the 405
        actor = await self.authenticate(request)
        body = await read_json_object(request, self.max_body_bytes)
        spec = _checked(parse_query_ast(body))
        if spec.aggregations or spec.group_by:
            await self.object(name, "aggregate", _QUERY)
            rows = await self.service.aggregate(name, spec, actor=actor)
            return respond(request, rows)
        await self.object(name, "list", _QUERY)
        result = await self.service.find(name, spec, actor=actor)
        return respond(request, result.records, pagination=result.pagination())

    async def batch(self, request: Request) -> Response:
        name = request.path_params["object"]
        obj = await self.object(name, "bulk", _BATCH)
        actor = await self.authenticate(request)
        body = await read_json_object(request, self.max_body_bytes)
        operations, all_or_none = self._batch_operations(obj, body)
        results = await self.service.batch(name, operations, actor=actor, all_or_none=all_or_none)
        items = [r.to_dict() for r in results]
        failed = [r for r in results if r.status == "failed"]
        if all_or_none and failed:
            cause = failed[0].error or ValidationError("the batch failed")
            error = type(cause)(
                f"batch operation {failed[0].index} failed, nothing was written: {cause.message}",
                {**cause.details, "index": failed[0].index, "results": items},
                list(cause.field_errors),
            )
            return error_response(request, error)
        applied = sum(1 for r in results if r.success)
        data = {
            "allOrNone": all_or_none,
            "applied": applied,
            "failed": len(results) - applied,
            "results": items,
        }
        return respond(request, data)

    def _batch_operations(
        self, obj: ObjectSchema, body: Mapping[str, Any]
    ) -> tuple[list[BatchOperation], bool]:
        unknown = set(body) - _BATCH_KEYS
        if unknown:
            raise ValidationError(
                f"unknown batch keys: {', '.join(sorted(unknown))} "
                "(expected operations or records, and allOrNone)",
                details={"reason": "unknown key", "keys": sorted(unknown)},
            )
        if ("operations" in body) == ("records" in body):
            raise ValidationError(
                "a batch needs exactly one of operations (any operation) or records (creates)",
                details={"reason": "expected operations or records"},
            )
        all_or_none = body.get("allOrNone", True)
        if not isinstance(all_or_none, bool):
            raise InvalidField("allOrNone must be true or false", details={"field": "allOrNone"})
        key = "operations" if "operations" in body else "records"
        items = body[key]
        if not isinstance(items, list) or not items:
            raise InvalidField(f"{key} must be a non-empty array", details={"field": key})
        if len(items) > self.max_batch:
            raise InvalidField(
                f"a batch holds at most {self.max_batch} operations, got {len(items)}",
                details={"field": key, "limit": self.max_batch},
            )
        operations: list[BatchOperation] = []
        for index, item in enumerate(items):
            try:
                if key == "records":
                    if not isinstance(item, dict):
                        raise InvalidField("each record is an object")
                    operation = BatchOperation("create", dict(item))
                else:
                    operation = BatchOperation.from_dict(item)
            except ObjectOSError as exc:
                raise InvalidField(
                    f"{key}[{index}]: {exc.message}",
                    details={"field": f"{key}[{index}]", "index": index},
                ) from None
            if not obj.allows(operation.operation):
                raise MethodNotAllowed(
                    f"{key}[{index}]: {operation.operation} is not enabled for {obj.name}",
                    details={
                        "object": obj.name,
                        "operation": operation.operation,
                        "index": index,
                        "allow": _allowed(obj, _BATCH),
                    },
                )
            operations.append(operation)
        return operations, all_or_none

    # -- metadata -----

    # Metadata describes the data model (objects, fields, permission sets): callers
    # must be authenticated, like every data route, but need no object permission.

    async def meta_types(self, request: Request) -> Response:
        await self.authenticate(request)
        registry = await self.registry()
        types = []
        for kind in registry.kinds():
            count = len(visible_items(registry, kind))
            types.append({"type": kind, "count": count, "href": f"{META_BASE}/{kind}"})
        return respond(request, {"types": types})

    async def meta_list(self, request: Request) -> Response:
        await self.authenticate(request)
        registry = await self.registry()
        kind = _meta_kind(registry, request.path_params["type"])
        items = visible_items(registry, kind)
        etag = content_etag({"kind": kind, "items": [[i.name, i.etag] for i in items]})
        if etag_matches(request.headers.get("if-none-match"), etag):
            return Response(status_code=304, headers={"ETag": etag})
        data = [{"name": i.name, "etag": i.etag, "definition": i.body} for i in items]
        return respond(request, data, headers={"ETag": etag})

    async def meta_item(self, request: Request) -> Response:
        await self.authenticate(request)
        registry = await self.registry()
        kind = _meta_kind(registry, request.path_params["type"])
        name = request.path_params["name"]
        item = registry.get(kind, name)
        if kind == "object":
            visible_object(registry, name)
        if etag_matches(request.headers.get("if-none-match"), item.etag):
            return Response(status_code=304, headers={"ETag": item.etag})
        return respond(request, item.body, headers={"ETag": item.etag})


def visible_object(registry: MetadataRegistry, name: str) -> ObjectSchema:
    """The object ``name`` when the REST API serves it (apiEnabled); else ObjectNotFound."""
    obj = registry.get_object(name)
    if not obj.enable.apiEnabled:
        # Indistinguishable from a missing object: apiEnabled false hides it entirely.
        raise ObjectNotFound(f"object {name!r} does not exist", details={"object": name})
    return obj


def visible_items(registry: MetadataRegistry, kind: str) -> list[MetadataItem]:
    """Items of ``kind`` the API shows (objects with apiEnabled false are left out)."""
    items = registry.items(kind)
    if kind == "object":
        items = [i for i in items if i.model is None or i.model.enable.apiEnabled]
    return items


def _meta_kind(registry: MetadataRegistry, given: str) -> str:
    kind = given[:-1] if given not in KINDS and given.endswith("s") else given
    if kind not in KINDS:
        raise NotFound(
            f"metadata type {given!r} does not exist (known: {', '.join(KINDS)})",
            details={"type": given},
        )
    return kind


def _checked(spec: QuerySpec) -> QuerySpec:
    if spec.offset > MAX_OFFSET:
        raise InvalidFilter(
            f"skip must be at most {MAX_OFFSET}, got {spec.offset}",
            details={"parameter": "skip", "reason": f"must be at most {MAX_OFFSET}"},
        )
    return spec


def _known_id(object_name: str, record_id: str) -> None:
    # An id no record can have is "not found" without asking the database, which
    # keeps NUL bytes and other junk from the path away from SQL drivers.
    if not valid_id(record_id):
        raise RecordNotFound(
            f"{object_name} record {record_id!r} does not exist",
            details={"object": object_name, "id": record_id},
        )


Handler = Callable[[Request], Awaitable[Response]]


def _guarded(handlers: Mapping[str, Handler]) -> Handler:
    """One endpoint for a path: dispatch by method; every error becomes an envelope."""

    async def endpoint(request: Request) -> Response:
        method = "GET" if request.method == "HEAD" else request.method
        try:
            return await handlers[method](request)
        except decimal.InvalidOperation:
            # The engine's decimal coercion overflows Python's 28-digit context on
            # absurdly large numbers (objectos.data.values, reported upstream); it is the
            # client's number that is out of range, so say so instead of a 500.
            logger.warning("decimal overflow on %s %s", request.method, request.url.path)
            error = InvalidField(
                "a number in the request is out of range",
                details={"reason": "number out of range"},
            )
            return error_response(request, error)
        except Exception as exc:  # the one place a route's error becomes an envelope
            return error_response(request, exc)

    return endpoint


def _route(path: str, handlers: Mapping[str, Handler]) -> Route:
    # One Route per path (not per method), so Starlette's own 405 lists every method.
    return Route(path, _guarded(handlers), methods=list(handlers))


def data_routes(
    service: DataService,
    registry: RegistrySource,
    authenticate: Authenticator | None = None,
    *,
    max_body_bytes: int = MAX_BODY_BYTES,
    max_batch: int = MAX_BATCH_OPERATIONS,
) -> list[Route]:
    """The ``/api/v1/data`` and ``/api/v1/meta`` routes over ``service`` and ``registry``.

    ``authenticate`` defaults to :class:`AnonymousAuthenticator` (see its
    warning). Every error, expected or not, leaves as the protocol's error
    envelope; see the module docstring for the routes and their rules.
    """
    api = _DataAPI(
        service, registry, authenticate or AnonymousAuthenticator(), max_body_bytes, max_batch
    )
    obj = f"{DATA_BASE}/{{object}}"
    return [
        _route(f"{obj}/query", {"POST": api.query}),
        _route(f"{obj}/batch", {"POST": api.batch}),
        _route(obj, {"GET": api.list_records, "POST": api.create_record}),
        _route(
            f"{obj}/{{id}}",
            {"GET": api.get_record, "PATCH": api.update_record, "DELETE": api.delete_record},
        ),
        _route(META_BASE, {"GET": api.meta_types}),
        _route(f"{META_BASE}/{{type}}", {"GET": api.meta_list}),
        _route(f"{META_BASE}/{{type}}/{{name}}", {"GET": api.meta_item}),
    ]


__all__ = [
    "DATA_BASE",
    "MAX_BATCH_OPERATIONS",
    "MAX_BODY_BYTES",
    "MAX_OFFSET",
    "META_BASE",
    "AnonymousAuthenticator",
    "Authenticator",
    "DataService",
    "RegistrySource",
    "check_json_text",
    "data_routes",
    "etag_matches",
    "query_params",
    "read_json_object",
    "record_etag",
    "visible_items",
    "visible_object",
]
