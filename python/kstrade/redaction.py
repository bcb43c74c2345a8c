"""Which settings and librdkafka properties carry a secret, by one rule on the name (and a look at
the value), and how a secret is masked wherever config, properties or errors are shown.

The rule works on the name's words (split on `.`, `_` and `-`), so a property nobody listed is
still caught: a name is secret when a word says password, passphrase, secret, token, JWT, key,
PEM or credential (or it is a SASL `*.config` / JAAS string, or a `user.info`), unless its last
word says the value only *points at* the secret or is a public identifier: `.location`, `.file`,
`.path`, `.url`, `.id`, ... (`ssl.key.location` is a file path, protected by the file's mode;
`sasl.oauthbearer.client.credentials.client.id` is public by definition). Switches named
`enable.*` are booleans. Certificates are public: `ssl.certificate.pem`, `ssl.ca.pem` and
`https.ca.pem` are shown, unless the value holds a private key (a key pasted into a cert bundle
is masked whatever its name). `sasl.username` is shown: an identity, needed to read ACL errors.
Whatever the name, a URL's userinfo password (`postgresql://user:pw@host/db`) is masked.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

#: What a masked value reads as (pydantic's SecretStr prints the same).
MASK = "**********"

_WORDS = re.compile(r"[._\-]+")
_SECRET_WORDS = frozenset(
    {
        "password", "passwd", "pwd", "passphrase", "pass", "secret", "secrets", "token", "jwt", "key",
        "apikey", "pem", "credential", "credentials", "jaas", "userinfo",
    }
)  # fmt: skip
#: The value names where the secret is, or is public: shown.
_POINTER_WORDS = frozenset(
    {"location", "file", "path", "dir", "url", "uri", "endpoint", "id", "type", "method", "algorithm", "cmd"}
)
_PUBLIC_PEMS = frozenset({"certificate", "ca", "cert"})
_URL_PASSWORD = re.compile(r"(?P<head>[a-zA-Z][a-zA-Z0-9+.\-]*://[^:/@\s]*:)(?P<pw>[^@\s/]+)(?P<at>@)")


def is_secret_name(name: str) -> bool:
    """True when a setting or librdkafka property of this name carries a secret value."""
    words = [w for w in _WORDS.split(name.lower()) if w]
    if not words or words[0] == "enable" or words[-1] in _POINTER_WORDS:
        return False
    if "pem" in words and _PUBLIC_PEMS.intersection(words):
        return False  # a certificate (a private key inside one is caught by the value)
    if words[-1] == "config" and ("sasl" in words or "jaas" in words):
        return True  # sasl.oauthbearer.config, sasl.jaas.config: key=value strings with secrets
    if words[-2:] == ["user", "info"]:
        return True  # basic.auth.user.info is user:password
    return not _SECRET_WORDS.isdisjoint(words)


def is_secret(name: str, value: object) -> bool:
    """The name rule, and a private key in the value whatever the name."""
    return is_secret_name(name) or (isinstance(value, str) and "PRIVATE KEY" in value)


def mask_value(name: str, value: Any) -> Any:
    """`value` as it may be shown under `name`: masked when secret, URL passwords masked."""
    if value is None:
        return None
    if is_secret(name, value):
        return MASK
    if isinstance(value, str):
        return _URL_PASSWORD.sub(lambda m: f"{m['head']}{MASK}{m['at']}", value)
    return value


def mask_tree(data: Any, name: str = "") -> Any:
    """A config dump (dicts, lists, scalars) with each leaf masked by its own key's name."""
    if isinstance(data, Mapping):
        return {key: mask_tree(value, str(key)) for key, value in data.items()}
    if isinstance(data, list):
        return [mask_tree(value, name) for value in data]
    return mask_value(name, data)


def mask_properties(properties: Mapping[str, Any]) -> dict[str, Any]:
    """librdkafka properties as they may be logged."""
    return {key: mask_value(key, value) for key, value in properties.items()}


def scrub(message: str, properties: Mapping[str, Any]) -> str:
    """An error message with every secret property value it quotes masked. librdkafka's config
    errors quote the value ("No such configuration property: \"sasl.pasword\" sasl.pasword
    hunter2"), and a misspelt name escapes the name rule, so the value after a quoted property
    name is dropped for every property, and every secret value is masked wherever it appears."""
    for key, value in properties.items():
        text = str(value)
        if text and f"{key} {text}" in message:
            message = message.replace(f"{key} {text}", f"{key} {MASK}")
    for value in _secret_values(properties):
        message = message.replace(value, MASK)
    return message


def _secret_values(properties: Mapping[str, Any]) -> Iterable[str]:
    # Longest first, so a secret that contains another is masked whole.
    values = {str(v) for k, v in properties.items() if v is not None and str(v) and is_secret(k, v)}
    return sorted(values, key=len, reverse=True)
