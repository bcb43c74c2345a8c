"""What every settings section shares: the error a bad config raises, and the section base
(unknown keys rejected, frozen). A leaf: the section modules and the root import it, it imports
none of them."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class ConfigError(ValueError):
    """The configuration is invalid; the message names each bad key."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
