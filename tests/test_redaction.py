"""Secrets are masked by one rule on the name: every librdkafka property documented to carry a
secret is masked in `config show`, in settings reprs and in client errors; the ones an operator
needs to read (addresses, file paths, identities, public certificates) are shown."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

import pytest

from kstrade.bus import Bus, BusError
from kstrade.cli import main
from kstrade.config import ConfigError, load
from kstrade.redaction import MASK, is_secret_name, scrub

#: librdkafka 2.12 CONFIGURATION.md: every property whose value is a secret (passwords, private
#: keys and their passphrases, OAuth client secrets, the SASL/OAUTHBEARER config string), the
#: C-API-only `ssl_key`, and the JAAS / schema-registry forms people paste from Java configs.
SECRET_PROPERTIES = [
    "sasl.password",
    "ssl.key.password",
    "ssl.key.pem",
    "ssl_key",
    "ssl.keystore.password",
    "sasl.oauthbearer.config",
    "sasl.oauthbearer.client.secret",
    "sasl.oauthbearer.client.credentials.client.secret",
    "sasl.oauthbearer.assertion.private.key.pem",
    "sasl.oauthbearer.assertion.private.key.passphrase",
    "sasl.jaas.config",
    "basic.auth.user.info",
]

#: Shown: where things are, who one is, and public certificates. librdkafka itself flags
#: `sasl.username`, `ssl.key.location` and `ssl.ca.pem` as sensitive; they are not secrets (a
#: path is protected by its file's mode), and an operator reading an ACL error needs the user.
PUBLIC_PROPERTIES = {
    "bootstrap.servers": "10.0.0.5:9093",
    "security.protocol": "SASL_SSL",
    "sasl.mechanism": "OAUTHBEARER",
    "sasl.username": "kstrade-features",
    "ssl.ca.location": "/etc/kstrade/ca.pem",
    "ssl.key.location": "/etc/kstrade/client.key",
    "ssl.keystore.location": "/etc/kstrade/client.p12",
    "ssl.certificate.location": "/etc/kstrade/client.pem",
    "ssl.certificate.pem": "-----BEGIN CERTIFICATE-----\nMIIBpublic\n-----END CERTIFICATE-----",
    "ssl.ca.pem": "-----BEGIN CERTIFICATE-----\nMIIBca\n-----END CERTIFICATE-----",
    "ssl.engine.id": "dynamic",
    "ssl.engine.location": "/usr/lib/engines/pkcs11.so",
    "sasl.kerberos.keytab": "/etc/krb5.keytab",
    "sasl.oauthbearer.client.id": "kstrade",
    "sasl.oauthbearer.assertion.private.key.file": "/etc/kstrade/assertion.key",
    "sasl.oauthbearer.token.endpoint.url": "https://idp.example/token",
    "enable.sasl.oauthbearer.unsecure.jwt": "false",
    "ssl.endpoint.identification.algorithm": "https",
}


def _secret(name: str) -> str:
    return f"s3cret-value-of-{name}"


def test_config_show_masks_every_secret_bearing_librdkafka_property(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    properties = {**{name: _secret(name) for name in SECRET_PROPERTIES}, **PUBLIC_PROPERTIES}
    monkeypatch.setenv("KSTRADE_BUS__PROPERTIES", json.dumps(properties))
    monkeypatch.setenv("KSTRADE_METRICS__DATABASE_URL", "postgresql://kstrade:db-pw-77@db.internal/metrics")
    assert main(["config", "show", "--format", "json"]) == 0
    out = capsys.readouterr().out
    shown = json.loads(out)["bus"]["properties"]
    for name in SECRET_PROPERTIES:
        assert shown[name] == MASK, name
        assert _secret(name) not in out, name
    for name, value in PUBLIC_PROPERTIES.items():
        assert shown[name] == value, name
    assert "db-pw-77" not in out  # a URL's password, whatever the setting's name
    assert json.loads(out)["metrics"]["database_url"] == f"postgresql://kstrade:{MASK}@db.internal/metrics"
    # The TOML (the default): the same masks, the masked properties as comments only.
    assert main(["config", "show"]) == 0
    text = capsys.readouterr().out
    table = tomllib.loads(text)
    for name in SECRET_PROPERTIES:
        assert _secret(name) not in text and name not in table["bus"]["properties"], name
    assert table["bus"]["properties"] == PUBLIC_PROPERTIES
    assert "db-pw-77" not in text and table["metrics"]["database_url"].startswith("postgresql://kstrade:*")


def test_a_private_key_is_masked_whatever_the_property_is_called() -> None:
    bundle = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n-----BEGIN PRIVATE KEY-----\nMIIE"
    settings = load(bus={"properties": {"ssl.certificate.pem": bundle}})
    assert "PRIVATE KEY" not in repr(settings)


def test_settings_reprs_and_client_errors_do_not_quote_secrets() -> None:
    settings = load(bus={"properties": {"ssl.key.pem": "-----BEGIN PRIVATE KEY-----hunter2"}})
    assert "hunter2" not in repr(settings) and "hunter2" not in str(settings)
    # librdkafka quotes the value of a property it does not know, and of a key it cannot parse.
    for props in ({"sasl.pasword": "hunter2"}, {"security.protocol": "SSL", "ssl.key.pem": "hunter2"}):
        with pytest.raises(BusError) as err:
            Bus.kafka("127.0.0.1:1", props).producer()
        assert "hunter2" not in str(err.value) and err.value.code == "BUS_CONFIG"
    assert scrub('property: "sasl.pasword" sasl.pasword hunter2', {"sasl.pasword": "hunter2"}).endswith(MASK)


def test_a_secret_property_in_the_config_file_is_refused(tmp_path: Path) -> None:
    leaked = tmp_path / "leak.toml"
    leaked.write_text('[bus.properties]\n"ssl.key.pem" = "-----BEGIN PRIVATE KEY-----"\n')
    with pytest.raises(ConfigError, match=r"bus\.properties\.ssl\.key\.pem"):
        load(leaked)
    fine = tmp_path / "fine.toml"
    fine.write_text('[bus.properties]\n"ssl.key.location" = "/etc/kstrade/client.key"\n')
    assert load(fine).bus.properties["ssl.key.location"] == "/etc/kstrade/client.key"


@pytest.mark.parametrize("name", ["api_key", "mt5_password", "bot_token", "jwt", "oauth.client_secret"])
def test_the_rule_covers_settings_nobody_listed(name: str) -> None:
    assert is_secret_name(name)


@pytest.mark.parametrize("name", ["sasl_password_file", "bot_token_file", "api_url", "symbols", "partition"])
def test_the_rule_leaves_pointers_and_plain_settings_alone(name: str) -> None:
    assert not is_secret_name(name)
