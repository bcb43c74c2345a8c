"""A small Confluent Schema Registry client: register a schema under a subject, look one up by
id, and cache both so the hot path never waits on HTTP after the first message.

Only the two endpoints the Confluent wire format needs (REST API v1):

    POST /subjects/{subject}/versions   {"schema": "<avsc text>"}  ->  {"id": N}
    GET  /schemas/ids/{id}                                          ->  {"schema": "<avsc text>"}

Off by default: `Codec(..., wire="confluent", registry=SchemaRegistry(url))` turns it on.
"""

from __future__ import annotations

import base64
import json
import threading
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

CONTENT_TYPE = "application/vnd.schemaregistry.v1+json"


class RegistryError(RuntimeError):
    """The registry refused a request or could not be reached; `.status` is the HTTP status."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class SchemaRefused(ValueError):
    """The registry refused a schema (4xx: incompatible with the subject's rule, bad
    credentials, not a registry at that URL): a configuration problem, not an outage."""

    def __init__(self, message: str, status: int | None) -> None:
        super().__init__(message)
        self.status = status


class SchemaRegistry:
    def __init__(self, url: str, *, timeout: float = 10.0, auth: tuple[str, str] | None = None) -> None:
        self.url = url.rstrip("/")
        self.timeout = timeout
        self._auth = auth
        self._ids: dict[tuple[str, str], int] = {}
        self._schemas: dict[int, dict[str, Any]] = {}
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"SchemaRegistry({self.url!r})"  # never the credentials

    def _request(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.url + path, data=data, method=method)
        req.add_header("Accept", CONTENT_TYPE)
        if data is not None:
            req.add_header("Content-Type", CONTENT_TYPE)
        if self._auth is not None:
            token = base64.b64encode(f"{self._auth[0]}:{self._auth[1]}".encode()).decode()
            req.add_header("Authorization", f"Basic {token}")
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                return json.loads(resp.read())
        except urllib.error.HTTPError as e:
            detail = e.read().decode("utf-8", "replace")[:500]
            raise RegistryError(f"{method} {path}: HTTP {e.code}: {detail}", e.code) from None
        except (urllib.error.URLError, TimeoutError, OSError) as e:
            raise RegistryError(f"{method} {path}: {e}") from None

    def register(self, subject: str, schema: dict[str, Any]) -> int:
        """The id of `schema` under `subject`, registering it if needed (idempotent, cached)."""
        text = json.dumps(schema, separators=(",", ":"), sort_keys=True)
        key = (subject, text)
        with self._lock:
            if key in self._ids:
                return self._ids[key]
        reply = self._request("POST", f"/subjects/{urllib.parse.quote(subject, safe='')}/versions", {"schema": text})
        schema_id = int(reply["id"])
        with self._lock:
            self._ids[key] = schema_id
            self._schemas.setdefault(schema_id, json.loads(text))
        return schema_id

    def schema_by_id(self, schema_id: int) -> dict[str, Any]:
        """The schema with this id (cached: ids are immutable). LookupError if there is none."""
        with self._lock:
            if schema_id in self._schemas:
                return self._schemas[schema_id]
        try:
            reply = self._request("GET", f"/schemas/ids/{schema_id}")
        except RegistryError as e:
            if e.status == 404:
                raise LookupError(f"no schema with id {schema_id} in the registry") from None
            raise
        schema: dict[str, Any] = json.loads(reply["schema"])
        with self._lock:
            self._schemas[schema_id] = schema
        return schema
