"""A small NGSI-LD broker for tests: batch upsert only, strict about what it accepts.

It answers `POST /ngsi-ld/v1/entityOperations/upsert` as a broker would (201 with the created
ids, 204 when every entity existed, 207 Multi-Status with a BatchOperationResult when any
entity failed), and checks every entity on the way in:

- normalized NGSI-LD form: each attribute a Property (with `value`), GeoProperty (GeoJSON) or
  Relationship (with `object`); `observedAt` an RFC 3339 UTC time;
- its `@context`: the entity type's Smart Data Models context URL (the NGSI-LD core context,
  if listed, last), and every attribute name a term that context defines (read from the local
  copies in tests/gateway/smart_data_models/contexts/, never fetched);
- the official JSON Schema of its type, from tests/gateway/smart_data_models/<Type>/schema.json,
  with every `$ref` target (common-schema.json, device-schema.json) registered locally through
  `referencing`, so nothing is fetched. Those schemas describe the key-values form of an
  entity (attributes as bare values), so what is validated is the key-values projection of the
  normalized entity: each Property and GeoProperty replaced by its `value`, each Relationship
  by its `object`.

An entity failing a check gets a 400 BadRequestData in the 207 answer and is recorded in
`invalid`; tests assert that list stays empty. Failures can be injected per request or per
entity. Runs in a thread of its own (`start()`/`stop()`), or as a process for the benchmark:
`python -m tests.gateway.ngsi_ld_broker [--no-validate]` prints its port.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import re
import threading
from collections import deque
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from aiohttp import web
from jsonschema import Draft202012Validator, FormatChecker
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

# A copy of shared/ref/smart-data-models kept beside the tests (see its SOURCES.md).
SDM = Path(__file__).resolve().parent / "smart_data_models"
UPSERT = "/ngsi-ld/v1/entityOperations/upsert"
CORE_CONTEXT = "https://uri.etsi.org/ngsi-ld/v1/ngsi-ld-core-context.jsonld"
SDM_CONTEXT = re.compile(
    r"^https://raw\.githubusercontent\.com/smart-data-models/(dataModel\.\w+)/master/context\.jsonld$"
)
TYPES = {
    "WaterConsumptionObserved": "dataModel.WaterConsumption",
    "ParkingSpot": "dataModel.Parking",
    "Streetlight": "dataModel.Streetlighting",
    "WasteContainer": "dataModel.WasteManagement",
    "Device": "dataModel.Device",
    "DeviceMeasurement": "dataModel.Device",
}
# Terms of the NGSI-LD core context that any entity may use.
CORE_TERMS = {"id", "type", "@context", "location", "observationSpace", "operationSpace"}
ATTRIBUTE_META = {"type", "value", "object", "observedAt", "unitCode", "datasetId"}
ERRORS = "https://uri.etsi.org/ngsi-ld/errors/"
_RFC3339_UTC = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,6})?Z$")
_RFC3339 = re.compile(r"^\d{4}-\d\d-\d\d[Tt]\d\d:\d\d:\d\d(\.\d+)?([Zz]|[+-]\d\d:\d\d)$")
_URI = re.compile(r"^[A-Za-z][A-Za-z0-9+.\-]*:\S+$")

FORMATS = FormatChecker()


@FORMATS.checks("date-time", raises=ValueError)
def _is_date_time(value: object) -> bool:
    # jsonschema checks date-time only when rfc3339-validator is installed: check it here.
    if not isinstance(value, str):
        return True
    if not _RFC3339.match(value):
        return False
    datetime.fromisoformat(value.upper().replace("Z", "+00:00"))
    return True


@FORMATS.checks("uri")
def _is_uri(value: object) -> bool:
    return not isinstance(value, str) or bool(_URI.match(value))


def load_registry(root: Path = SDM) -> Registry[Any]:
    """Every schema file under `root`, registered under its `$id` (no retrieval: no network)."""
    resources = []
    for path in sorted(root.rglob("*schema.json")):
        contents = json.loads(path.read_text())
        resource = Resource.from_contents(contents, default_specification=DRAFT202012)
        resources.append((contents["$id"], resource))
    return Registry().with_resources(resources)


def load_context_terms(root: Path = SDM) -> dict[str, set[str]]:
    """Data model name -> the terms its context defines."""
    terms = {}
    for path in (root / "contexts").glob("*.context.jsonld"):
        model = path.name.removesuffix(".context.jsonld")
        terms[model] = set(json.loads(path.read_text())["@context"])
    return terms


def key_values(entity: dict[str, Any]) -> dict[str, Any]:
    """The key-values projection of a normalized entity (what the SDM schemas describe)."""
    projected: dict[str, Any] = {}
    for name, attr in entity.items():
        if name == "@context":
            continue
        if name in ("id", "type") or not isinstance(attr, dict):
            projected[name] = attr
        elif attr.get("type") == "Relationship":
            projected[name] = attr.get("object")
        else:
            projected[name] = attr.get("value")
    return projected


class EntityChecker:
    """All the checks above, reusable without HTTP (the entity-mapping tests call it directly)."""

    def __init__(self, root: Path = SDM) -> None:
        registry = load_registry(root)
        self.terms = load_context_terms(root)
        self.validators = {}
        for etype in TYPES:
            schema = json.loads((root / etype / "schema.json").read_text())
            Draft202012Validator.check_schema(schema)
            self.validators[etype] = Draft202012Validator(
                schema, registry=registry, format_checker=FORMATS
            )

    def problems(self, entity: Any) -> list[str]:
        if not isinstance(entity, dict):
            return ["an entity must be a JSON object"]
        found: list[str] = []
        etype = entity.get("type")
        if etype not in TYPES:
            return [f"type {etype!r} is not one of the models this broker knows"]
        eid = entity.get("id")
        if not isinstance(eid, str) or not _URI.match(eid):
            found.append(f"id {eid!r} is not a URI")
        found += self._context_problems(etype, entity)
        for name, attr in entity.items():
            if name not in ("id", "type", "@context"):
                found += [f"{name}: {p}" for p in _attribute_problems(attr)]
        validator = self.validators[etype]
        for error in sorted(validator.iter_errors(key_values(entity)), key=str):
            where = "/".join(str(p) for p in error.absolute_path) or "(entity)"
            found.append(f"schema {etype}: {where}: {error.message}")
        return found

    def _context_problems(self, etype: str, entity: dict[str, Any]) -> list[str]:
        context = entity.get("@context")
        if not isinstance(context, list) or not all(isinstance(c, str) for c in context):
            return [f"@context {context!r} is not a list of context URLs"]
        if CORE_CONTEXT in context[:-1]:
            # The core context is applied last anyway; placed earlier it would be overridden.
            return ["the NGSI-LD core context, when listed, must come last"]
        models = [m.group(1) for c in context if (m := SDM_CONTEXT.match(c))]
        if TYPES[etype] not in models:
            return [f"@context lacks the {TYPES[etype]} context for type {etype}"]
        defined = set(CORE_TERMS)
        for model in models:
            defined |= self.terms.get(model, set())
        return [
            f"attribute {name!r} is not a term of {', '.join(models)}"
            for name in entity
            if name not in defined
        ]


@functools.cache
def shared_checker() -> EntityChecker:
    """Loading and checking the schemas takes a moment: once per test process."""
    return EntityChecker()


def _attribute_problems(attr: Any) -> list[str]:
    if not isinstance(attr, dict):
        return ["not in normalized form (expected an object with a type)"]
    kind = attr.get("type")
    found = []
    if kind == "Property":
        if attr.get("value") is None:
            found.append("Property without a value")
    elif kind == "GeoProperty":
        value = attr.get("value")
        if not (isinstance(value, dict) and "type" in value and "coordinates" in value):
            found.append("GeoProperty whose value is not GeoJSON")
    elif kind == "Relationship":
        target = attr.get("object")
        if not (isinstance(target, str) and _URI.match(target)):
            found.append(f"Relationship object {target!r} is not a URI")
    else:
        found.append(f"attribute type {kind!r} (Property, GeoProperty or Relationship)")
    if "observedAt" in attr and not _RFC3339_UTC.match(str(attr["observedAt"])):
        found.append(f"observedAt {attr['observedAt']!r} is not an RFC 3339 UTC time")
    if "unitCode" in attr and not isinstance(attr["unitCode"], str):
        found.append("unitCode is not a string")
    for sub, value in attr.items():
        if sub not in ATTRIBUTE_META:
            found += [f"{sub}: {p}" for p in _attribute_problems(value)]
    return found


@dataclass
class Request:
    """One upsert as the broker saw it."""

    options: str | None
    content_type: str
    tenant: str | None
    authorization: str | None
    entity_ids: list[str]
    status: int = 0


@dataclass
class NGSILDBroker:
    """The broker. `entities[tenant][id]` is the merged state, `received` every entity seen."""

    validate: bool = True
    token: str | None = None  # when set, requests must carry `Authorization: Bearer <token>`
    host: str = "127.0.0.1"
    port: int = 0
    requests: list[Request] = field(default_factory=list)
    received: list[dict[str, Any]] = field(default_factory=list)
    entities: dict[str | None, dict[str, dict[str, Any]]] = field(default_factory=dict)
    invalid: list[tuple[str, list[str]]] = field(default_factory=list)
    # Injected failures: statuses for the next whole requests, and per entity id.
    request_failures: deque[int | None] = field(default_factory=deque)
    entity_failures: dict[str, deque[int]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.checker = shared_checker() if self.validate else None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def fail_requests(self, status: int, times: int = 1, after: int = 0) -> None:
        """Answer `times` requests with `status`, after letting `after` requests through."""
        self.request_failures.extend([None] * after + [status] * times)

    def fail_entity(self, entity_id: str, status: int, times: int = 1) -> None:
        self.entity_failures.setdefault(entity_id, deque()).extend([status] * times)

    # ---- HTTP ------------------------------------------------------------------------------

    def app(self) -> web.Application:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_post(UPSERT, self._upsert)
        return app

    async def _upsert(self, request: web.Request) -> web.Response:
        tenant = request.headers.get("NGSILD-Tenant")
        log = Request(
            options=request.query.get("options"),
            content_type=request.content_type,
            tenant=tenant,
            authorization=request.headers.get("Authorization"),
            entity_ids=[],
        )
        self.requests.append(log)
        response = await self._answer(request, log, tenant)
        log.status = response.status
        return response

    async def _answer(self, request: web.Request, log: Request, tenant: str | None) -> web.Response:
        if self.token is not None and log.authorization != f"Bearer {self.token}":
            return _problem(401, "Unauthorized", "missing or wrong bearer token")
        status = self.request_failures.popleft() if self.request_failures else None
        if status is not None:
            return _problem(
                status, "InternalError" if status >= 500 else "BadRequestData", "injected"
            )
        if request.content_type != "application/ld+json":
            return _problem(
                415, "InvalidRequest", "entities with @context need application/ld+json"
            )
        try:
            body = json.loads(await request.read())
        except ValueError:
            return _problem(400, "InvalidRequest", "body is not JSON")
        if not isinstance(body, list):
            return _problem(400, "InvalidRequest", "an upsert body is a JSON array of entities")
        if len(body) > 1000:
            return _problem(400, "BadRequestData", f"{len(body)} entities; this broker takes 1000")
        store = self.entities.setdefault(tenant, {})
        success: list[str] = []
        created: list[str] = []
        errors: list[dict[str, Any]] = []
        seen: set[str] = set()
        for entity in body:
            eid = entity.get("id") if isinstance(entity, dict) else None
            eid = eid if isinstance(eid, str) else "?"
            log.entity_ids.append(eid)
            problems = self.checker.problems(entity) if self.checker else []
            if eid in seen:
                problems.append("the same entity id twice in one request")
            seen.add(eid)
            injected = self.entity_failures.get(eid)
            if problems:
                self.invalid.append((eid, problems))
                errors.append(_entity_error(eid, 400, "BadRequestData", "; ".join(problems)))
            elif injected:
                status = injected.popleft()
                kind = "InternalError" if status >= 500 else "BadRequestData"
                errors.append(_entity_error(eid, status, kind, "injected"))
            else:
                self.received.append(entity)
                if eid not in store:
                    created.append(eid)
                    store[eid] = {}
                # options=update: attributes are merged into the entity, never replace it.
                store[eid].update(entity)
                success.append(eid)
        if errors:
            return web.json_response({"success": success, "errors": errors}, status=207)
        if created:
            return web.json_response(created, status=201)
        return web.Response(status=204)

    # ---- lifecycle -------------------------------------------------------------------------

    async def start_async(self) -> None:
        self._runner = web.AppRunner(self.app(), access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port, reuse_address=True)
        await site.start()
        self.port = self._runner.addresses[0][1]

    async def stop_async(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    def start(self) -> NGSILDBroker:
        """Serve from a thread of its own (its port stays the same across stop/start)."""
        ready = threading.Event()
        loop = asyncio.new_event_loop()

        def serve() -> None:
            asyncio.set_event_loop(loop)
            loop.run_until_complete(self.start_async())
            ready.set()
            loop.run_forever()
            loop.run_until_complete(self.stop_async())
            loop.close()

        self._loop = loop
        self._thread = threading.Thread(target=serve, name="ngsi-ld-broker", daemon=True)
        self._thread.start()
        if not ready.wait(10):
            raise RuntimeError("the NGSI-LD test broker did not start")
        return self

    def stop(self) -> None:
        if self._loop is not None and self._thread is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
            self._loop = self._thread = None


def _problem(status: int, kind: str, detail: str) -> web.Response:
    body = {"type": ERRORS + kind, "title": kind, "status": status, "detail": detail}
    return web.json_response(body, status=status, content_type="application/json")


def _entity_error(eid: str, status: int, kind: str, detail: str) -> dict[str, Any]:
    return {
        "entityId": eid,
        "error": {"type": ERRORS + kind, "title": kind, "status": status, "detail": detail},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--no-validate", action="store_true")
    args = parser.parse_args()
    broker = NGSILDBroker(validate=not args.no_validate, port=args.port)

    async def serve() -> None:
        await broker.start_async()
        print(broker.port, flush=True)
        await asyncio.Event().wait()

    asyncio.run(serve())


if __name__ == "__main__":
    main()
