"""Queues through an identity, against Azurite with OAuth: HTTPS (a certificate made here), bearer
tokens checked for issuer, audience and expiry — the path the app takes in Azure, where the
account refuses shared keys."""
from __future__ import annotations

import base64
import datetime as dt
import ipaddress
import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from azure.core.credentials import AccessToken
from azure.core.exceptions import ClientAuthenticationError, HttpResponseError
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from devtools.localhost.azurite import AzuriteUnavailable, start_azurite_queue, stop
from shared.queues.azure import AzureQueues
from tests.conftest import unique

pytestmark = pytest.mark.azurite  # Azurite in HTTPS + OAuth mode

TENANT = "72f988bf-86f1-41af-91ab-2d7cd011db47"  # any Entra tenant id: Azurite checks the issuer's form


def self_signed(folder: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = folder / "cert.pem", folder / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


class Identity:
    """Stands in for ManagedIdentityCredential: a token shaped as Entra issues them for Storage."""

    def __init__(self, audience: str = "https://storage.azure.com") -> None:
        self.audience = audience
        self.scopes: list[str] = []

    def get_token(self, *scopes: str, **_kwargs: object) -> AccessToken:
        self.scopes.extend(scopes)
        now = int(time.time())
        claims = {"aud": self.audience, "iss": f"https://sts.windows.net/{TENANT}/", "iat": now, "nbf": now,
                  "exp": now + 3600, "oid": "00000000-0000-0000-0000-00000000abcd", "tid": TENANT}
        part = lambda value: base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=").decode()
        return AccessToken(f"{part({'alg': 'RS256', 'typ': 'JWT'})}.{part(claims)}.c2ln", now + 3600)


@pytest.fixture(scope="module")
def azurite_oauth(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    folder = tmp_path_factory.mktemp("azurite-oauth")
    cert, key = self_signed(folder)
    try:
        proc, url = start_azurite_queue(folder / "azurite.log", oauth_tls=(cert, key))
    except AzuriteUnavailable as exc:
        pytest.fail(str(exc), pytrace=False)
    yield url, cert
    stop(proc)


def test_queues_work_with_an_entra_token_over_https(azurite_oauth: tuple[str, Path]) -> None:
    url, cert = azurite_oauth
    identity = Identity()
    queues = AzureQueues.from_identity(url, identity, ca_bundle=str(cert))
    queue = unique("changes")
    queues.send(queue, '{"tenant": "t1"}')
    assert queues.count(queue) == 1
    (message,) = queues.receive(queue, max_messages=5, visibility_timeout=30)
    assert message.text == '{"tenant": "t1"}'
    queues.delete(queue, message)
    assert queues.count(queue) == 0
    assert set(identity.scopes) == {"https://storage.azure.com/.default"}


def test_a_token_for_another_audience_is_refused(azurite_oauth: tuple[str, Path]) -> None:
    url, cert = azurite_oauth
    queues = AzureQueues.from_identity(url, Identity(audience="https://database.windows.net"), ca_bundle=str(cert))
    with pytest.raises((ClientAuthenticationError, HttpResponseError)) as refused:
        queues.send(unique("changes"), "x")
    assert getattr(refused.value, "status_code", None) in (401, 403)
