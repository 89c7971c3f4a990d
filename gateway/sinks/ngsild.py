"""NGSI-LD upstream: batch upsert of Smart Data Models entities to a context broker.

`POST /ngsi-ld/v1/entityOperations/upsert?options=update` with `application/ld+json` bodies
(each entity carries its `@context`: URLs only, the broker resolves them). `options=update`
merges the attributes sent into the entity instead of replacing it, so the static attributes
other systems add survive our updates.

How a batch of readings becomes requests:
- each reading maps to one or more entities (entities.py); a reading's entities always travel
  in the same request, so a reading is delivered only when all of them are;
- at most `max_entities` (1,000) entities per request;
- an entity id appears at most once per request: brokers refuse (or silently collapse) two
  updates of one entity in a single batch, and the history of an asset would lose a point.
  A reading goes into the first request after the last one holding any of its entity ids,
  so successive readings of a node are sent in order, in successive requests.

How answers map back to readings:
- 201 / 204: every entity accepted. 207 Multi-Status: per entity, from the
  BatchOperationResult (`success` ids, `errors` with a ProblemDetails each); an entity error
  with a 4xx status rejects its reading (poison, parked by the forwarder), any other error
  leaves it for a retry, and later readings touching the same entities wait too (order).
- a whole request refused with 400/413/422: some reading in it is bad; each reading is sent on
  its own to find which, and only that one is rejected.
- 5xx, 401/403/404/429, timeouts, refused connections: SinkUnavailable (nothing delivered) or,
  if earlier requests of this batch went through, their readings are reported delivered and
  the rest is left for the retry.
"""

from __future__ import annotations

import json
import logging
import os
import ssl
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import aiohttp

from gateway.config import GatewayConfig
from gateway.records import Reading
from gateway.sinks.base import SendResult, SinkUnavailable
from gateway.sinks.entities import (
    Entity,
    EntityMapper,
    Location,
    MappingError,
    NodeFacts,
    parse_location,
)

log = logging.getLogger(__name__)

UPSERT_PATH = "/ngsi-ld/v1/entityOperations/upsert"
MAX_ENTITIES = 1000  # per request: what brokers are sized for (Orion-LD, Scorpio, Stellio)
_SPLIT_STATUSES = {400, 413, 422}  # the request's content is refused: isolate the culprit
_ERROR_STATUS = {  # ProblemDetails type -> status, for brokers that leave `status` out
    "InvalidRequest": 400,
    "BadRequestData": 400,
    "AlreadyExists": 409,
    "OperationNotSupported": 422,
    "ResourceNotFound": 404,
    "InternalError": 500,
    "TooComplexQuery": 403,
    "TooManyResults": 403,
    "LdContextNotAvailable": 503,
}


@dataclass
class _Group:
    """One reading and the entities it maps to."""

    reading_id: str
    entities: list[Entity]
    ids: list[str] = field(init=False)

    def __post_init__(self) -> None:
        self.ids = [e["id"] for e in self.entities]


class _RequestRefused(Exception):
    """The broker refused a whole request for its content (400/413/422)."""


class NGSILDSink:
    """Upsert readings as entities into an NGSI-LD broker at `url` (scheme, host, port)."""

    def __init__(
        self,
        url: str,
        site: str,
        *,
        tenant: str | None = None,
        token: str | None = None,
        ca_file: str | os.PathLike[str] | None = None,
        timeout: float = 10.0,
        site_location: Location | None = None,
        node_facts: Callable[[str], NodeFacts | None] | None = None,
        parking_site: str | None = None,
        mapper: EntityMapper | None = None,
        max_entities: int = MAX_ENTITIES,
        max_batch: int = 1000,
        name: str = "ngsi_ld",
    ) -> None:
        if not 1 <= max_entities <= MAX_ENTITIES:
            raise ValueError(f"max_entities must be 1..{MAX_ENTITIES}")
        self.name = name
        self.max_batch = max_batch
        self.url = url.rstrip("/")
        self.endpoint = f"{self.url}{UPSERT_PATH}"
        self.tenant = tenant
        self.token = token
        self.max_entities = max_entities
        self.timeout = aiohttp.ClientTimeout(total=timeout)
        self.mapper = mapper or EntityMapper(
            site, site_location=site_location, node_facts=node_facts, parking_site=parking_site
        )
        self._ssl: ssl.SSLContext | bool = (
            ssl.create_default_context(cafile=ca_file) if ca_file else True
        )
        self._session: aiohttp.ClientSession | None = None
        self.requests_sent = 0

    async def start(self) -> None:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=self.timeout)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def send(self, batch: Sequence[Reading]) -> SendResult:
        await self.start()
        result = SendResult()
        groups = self._map(batch, result)
        blocked: set[str] = set()  # entity ids with an earlier reading not delivered
        try:
            for chunk in self._plan(groups):
                await self._send_chunk(chunk, result, blocked)
        except SinkUnavailable as exc:
            if not result.delivered and not result.rejected:
                raise
            log.warning(
                "%s: %s; %d readings delivered first", self.name, exc, len(result.delivered)
            )
        return result

    def plan(self, batch: Sequence[Reading]) -> list[list[Entity]]:
        """The request bodies (entity lists) a batch becomes when all goes well."""
        chunks = self._plan(self._map(batch, SendResult()))
        return [[e for g in chunk for e in g.entities] for chunk in chunks]

    def _map(self, batch: Sequence[Reading], result: SendResult) -> list[_Group]:
        groups: list[_Group] = []
        for reading in batch:
            try:
                entities = self.mapper.entities(reading)
            except MappingError as exc:
                result.rejected[reading.reading_id] = str(exc)
                continue
            if not entities:
                result.delivered.add(reading.reading_id)  # nothing of it goes upstream
            elif len(entities) > self.max_entities:
                result.rejected[reading.reading_id] = (
                    f"maps to {len(entities)} entities, more than one request may carry"
                )
            else:
                groups.append(_Group(reading.reading_id, entities))
        return groups

    def _plan(self, groups: list[_Group]) -> list[list[_Group]]:
        """Requests in sending order, each with unique entity ids and at most max_entities."""
        chunks: list[list[_Group]] = []
        sizes: list[int] = []
        last_chunk: dict[str, int] = {}  # entity id -> index of the last chunk holding it
        for group in groups:
            index = max((last_chunk.get(eid, -1) for eid in group.ids), default=-1) + 1
            while index < len(chunks) and sizes[index] + len(group.ids) > self.max_entities:
                index += 1
            if index == len(chunks):
                chunks.append([])
                sizes.append(0)
            chunks[index].append(group)
            sizes[index] += len(group.ids)
            for eid in group.ids:
                last_chunk[eid] = index
        return chunks

    async def _send_chunk(self, chunk: list[_Group], result: SendResult, blocked: set[str]) -> None:
        ready = []
        for group in chunk:
            if blocked.intersection(group.ids):
                blocked.update(group.ids)  # an earlier reading of these entities must go first
            else:
                ready.append(group)
        if not ready:
            return
        try:
            success, errors = await self._post([e for g in ready for e in g.entities])
        except _RequestRefused as exc:
            if len(ready) == 1:
                result.rejected[ready[0].reading_id] = str(exc)
                return
            for group in ready:  # find the bad reading(s): one request each, in order
                await self._send_chunk([group], result, blocked)
            return
        for group in ready:
            refused = [errors[eid] for eid in group.ids if eid in errors]
            poison = [text for status, text in refused if 400 <= status < 500]
            if poison:
                result.rejected[group.reading_id] = "; ".join(poison)
            elif refused or (success is not None and not success.issuperset(group.ids)):
                blocked.update(group.ids)
            else:
                result.delivered.add(group.reading_id)

    async def _post(
        self, entities: list[Entity]
    ) -> tuple[set[str] | None, dict[str, tuple[int, str]]]:
        """One upsert: (ids reported successful or None for all, {entity id: (status, why)})."""
        assert self._session is not None
        headers = {"Content-Type": "application/ld+json", "Accept": "application/json"}
        if self.tenant:
            headers["NGSILD-Tenant"] = self.tenant
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        body = json.dumps(entities, separators=(",", ":"), allow_nan=False).encode()
        try:
            async with self._session.post(
                self.endpoint,
                params={"options": "update"},
                data=body,
                headers=headers,
                ssl=self._ssl,
            ) as response:
                status = response.status
                payload = await response.read()
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise SinkUnavailable(
                f"{self.name}: {self.url} unreachable: {exc or type(exc).__name__}"
            ) from exc
        self.requests_sent += 1
        if status in (200, 201, 204):
            return None, {}
        if status == 207:
            return _multi_status(payload)
        detail = _problem_text(payload)
        if status in _SPLIT_STATUSES:
            raise _RequestRefused(f"broker refused the request ({status}): {detail}")
        if status in (401, 403):
            raise SinkUnavailable(
                f"{self.name}: {self.url} refused our credentials ({status}): {detail}; "
                "check the token configured for this sink"
            )
        raise SinkUnavailable(f"{self.name}: {self.endpoint} answered {status}: {detail}")


def _multi_status(payload: bytes) -> tuple[set[str], dict[str, tuple[int, str]]]:
    """A BatchOperationResult: `success` ids and `errors` [{entityId, error: ProblemDetails}]."""
    try:
        body = json.loads(payload)
        success = {str(eid) for eid in body.get("success", [])}
        errors: dict[str, tuple[int, str]] = {}
        for item in body.get("errors", []):
            problem = item.get("error") or {}
            status = problem.get("status")
            if not isinstance(status, int):
                kind = str(problem.get("type", "")).rsplit("/", 1)[-1]
                status = _ERROR_STATUS.get(kind, 500)
            text = problem.get("detail") or problem.get("title") or problem.get("type") or "error"
            errors[str(item.get("entityId"))] = (status, f"{status} {text}")
    except (ValueError, AttributeError, TypeError) as exc:
        # Unreadable: count nothing as delivered, blame nothing; the batch is retried.
        raise SinkUnavailable(f"unreadable 207 Multi-Status body: {exc}") from exc
    return success, errors


def _problem_text(payload: bytes) -> str:
    try:
        problem: Any = json.loads(payload)
        if isinstance(problem, dict):
            return str(problem.get("detail") or problem.get("title") or problem.get("type"))
    except ValueError:
        pass
    return payload[:200].decode("utf-8", "replace") or "(no body)"


class NodeLookup(Protocol):
    """What the sink needs of the node registry (gateway.registry.Registry has it)."""

    def get(self, node_id: str) -> Any: ...


def registry_facts(registry: NodeLookup) -> Callable[[str], NodeFacts | None]:
    """Node kind and location ("lat,lon" in the registry) for the entity mapping."""

    def facts(node_id: str) -> NodeFacts | None:
        node = registry.get(node_id)
        if node is None:
            return None
        return NodeFacts(kind=node.kind, location=parse_location(node.location))

    return facts


def from_config(config: GatewayConfig, registry: NodeLookup | None = None) -> NGSILDSink:
    """The `[sinks.ngsi_ld]` section as a sink; with the registry, entities get locations."""
    section = config.sinks.ngsi_ld
    return NGSILDSink(
        section.url,
        config.site_id,
        tenant=section.tenant,
        timeout=section.timeout_s,
        max_entities=section.max_batch,
        node_facts=registry_facts(registry) if registry is not None else None,
    )
