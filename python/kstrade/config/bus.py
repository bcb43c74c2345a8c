"""`[bus]`: which transport the stages talk through, how to reach Kafka, the schema registry,
and the time sanity checks at every live stage's door."""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field, SecretStr, model_validator

from kstrade.config.base import ConfigError, _Section
from kstrade.redaction import mask_properties

if TYPE_CHECKING:
    from kstrade.schemas.registry import SchemaRegistry


class BusSettings(_Section):
    """Which transport the stages talk through, and how to reach Kafka."""

    transport: Literal["memory", "kafka"] = "memory"
    bootstrap: str = "127.0.0.1:9092"
    replication_factor: int = Field(1, ge=1)
    min_insync_replicas: int | None = Field(None, ge=1)
    #: Any librdkafka property, applied to every client (e.g. "security.protocol"). One that
    #: carries a secret (`ssl.key.pem`, `sasl.oauthbearer.client.secret`, ...) only from the
    #: environment (KSTRADE_BUS__PROPERTIES, JSON); it is masked wherever settings are shown.
    properties: dict[str, str] = Field(default_factory=dict)
    sasl_username: str | None = None
    #: Only from KSTRADE_BUS__SASL_PASSWORD or the file named by sasl_password_file.
    sasl_password: SecretStr | None = None
    sasl_password_file: Path | None = None
    #: Time sanity at every live stage's door: a record whose market time (its origin_ns, a
    #: candle's close) is more than this ahead of the wall clock is dead-lettered
    #: FUTURE_TIMESTAMP and never moves state (replays have no wall clock: see Stage.future_limit_ns).
    max_future_skew_s: float = Field(120.0, gt=0, le=86_400)
    #: Backwards: live, a record whose market time lies more than this behind the newest a stage
    #: handled from the same partition is dead-lettered PAST_TIMESTAMP (a week: the topics'
    #: retention, so never a redelivery).
    max_past_jump_s: float = Field(7 * 86_400.0, gt=0)
    #: A Confluent-compatible schema registry (e.g. Apicurio's `http://host:8080/apis/ccompat/v7`).
    #: Set: on the kafka transport every producer registers its schema (subject: the full record
    #: name, e.g. `kstrade.Candle`) and writes the Confluent wire format; consumers read both
    #: wire formats either way. None: bare Avro (schemas/README.md, Encodings).
    schema_registry_url: str | None = None
    schema_registry_username: str | None = None
    #: Only from KSTRADE_BUS__SCHEMA_REGISTRY_PASSWORD or the file named by schema_registry_password_file.
    schema_registry_password: SecretStr | None = None
    schema_registry_password_file: Path | None = None

    @model_validator(mode="after")
    def _checks(self) -> BusSettings:
        if self.min_insync_replicas is not None and self.min_insync_replicas > self.replication_factor:
            raise ValueError("min_insync_replicas cannot exceed replication_factor")
        url = self.schema_registry_url
        if url is not None:
            if not re.match(r"https?://[^/\s]+", url):
                raise ValueError("schema_registry_url must be an http:// or https:// URL")
            if "@" in url.split("://", 1)[1].split("/", 1)[0]:
                raise ValueError(
                    "schema_registry_url: no credentials in the URL: set schema_registry_username and "
                    "KSTRADE_BUS__SCHEMA_REGISTRY_PASSWORD"
                )
        return self

    def __repr_args__(self) -> Iterable[tuple[str | None, Any]]:
        # A traceback or log line that prints the settings must not print ssl.key.pem.
        for name, value in super().__repr_args__():
            yield name, mask_properties(value) if name == "properties" and isinstance(value, dict) else value

    def password(self) -> str | None:
        if self.sasl_password is not None:
            return self.sasl_password.get_secret_value()
        if self.sasl_password_file is not None:
            try:
                return self.sasl_password_file.read_text().strip()
            except OSError as exc:
                raise ConfigError(f"bus.sasl_password_file: cannot read {self.sasl_password_file}: {exc}") from exc
        return None

    def schema_registry(self) -> SchemaRegistry | None:
        """The registry client these settings describe (credentials included), or None: off."""
        if self.schema_registry_url is None:
            return None
        from kstrade.schemas.registry import SchemaRegistry

        auth = None
        if self.schema_registry_username is not None:
            if self.schema_registry_password is not None:
                secret = self.schema_registry_password.get_secret_value()
            elif self.schema_registry_password_file is not None:
                try:
                    secret = self.schema_registry_password_file.read_text().strip()
                except OSError as exc:
                    raise ConfigError(
                        f"bus.schema_registry_password_file: cannot read {self.schema_registry_password_file}: {exc}"
                    ) from exc
            else:
                raise ConfigError(
                    "bus.schema_registry_password: schema_registry_username is set but no password: set "
                    "KSTRADE_BUS__SCHEMA_REGISTRY_PASSWORD or bus.schema_registry_password_file"
                )
            auth = (self.schema_registry_username, secret)
        return SchemaRegistry(self.schema_registry_url, auth=auth)

    @property
    def protocol(self) -> str:
        """The client's `security.protocol` (librdkafka's default: PLAINTEXT)."""
        return self.properties.get("security.protocol", "PLAINTEXT").upper()

    def client_properties(self) -> dict[str, str]:
        """librdkafka properties for this cluster, credentials included."""
        props = {**self.properties, "bootstrap.servers": self.bootstrap}
        if self.sasl_username is not None:
            secret = self.password()
            if secret is None:
                raise ConfigError(
                    "bus.sasl_password: sasl_username is set but no password: set KSTRADE_BUS__SASL_PASSWORD "
                    "or bus.sasl_password_file"
                )
            props["sasl.username"] = self.sasl_username
            props["sasl.password"] = secret
        return props
