"""A relay that requires STARTTLS and a login (MAILING_SMTP_STARTTLS, MAILING_SMTP_USERNAME,
MAILING_SMTP_PASSWORD), as a mail provider's submission port does: a real aiosmtpd relay on
loopback with a certificate for 127.0.0.1, trusted through SSL_CERT_FILE (what
`ssl.create_default_context()` reads), so the service's own TLS verification runs unchanged.

Mail goes only over the encrypted, logged-in connection; a wrong password or a certificate the
service cannot verify is an unreachable relay (retried later), and nothing is sent."""

from __future__ import annotations

import ssl
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from mailing.mail.devcapture import _free_port
from mailing.mail.relay import Mailer, TransientFailure
from tests.support.helpers import self_signed_pem
from tests.support.sending import Sink

USER, PASSWORD = "mailing-relay-user", "correct horse battery staple"
MESSAGE = b"From: updates@example.org\r\nTo: reader@example.net\r\nSubject: Hi\r\n\r\nHello.\r\n"


def _certificate(directory: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 and its key, as PEM files."""
    key = ec.generate_private_key(ec.SECP256R1())
    cert_path, key_path = directory / "relay.pem", directory / "relay.key"
    cert_path.write_bytes(self_signed_pem(key, "test relay", ip="127.0.0.1"))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


class LoggedSink(Sink):
    """Keeps each message with whether its session was encrypted and logged in."""

    def __init__(self) -> None:
        super().__init__()
        self.sessions: list[tuple[bool, bool]] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.sessions.append((session.ssl is not None, bool(session.authenticated)))
        return await super().handle_DATA(server, session, envelope)


def _authenticate(server: Any, session: Any, envelope: Any, mechanism: str, data: Any) -> Any:
    ok = isinstance(data, LoginPassword) and (data.login, data.password) == (
        USER.encode(),
        PASSWORD.encode(),
    )
    return AuthResult(success=ok, handled=False)  # not handled: aiosmtpd answers 535 itself


@pytest.fixture
def tls_relay(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[int, LoggedSink]]:
    cert, key = _certificate(tmp_path)
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_context.load_cert_chain(cert, key)
    monkeypatch.setenv("SSL_CERT_FILE", str(cert))  # the service trusts this relay, and only it
    sink = LoggedSink()
    port = _free_port()
    controller = Controller(
        sink,
        hostname="127.0.0.1",
        port=port,
        tls_context=server_context,
        require_starttls=True,
        auth_required=True,
        auth_require_tls=True,
        authenticator=_authenticate,
    )
    controller.start()
    try:
        yield port, sink
    finally:
        controller.stop()


def _relay_settings(settings_env: Callable[..., None], port: int, password: str) -> None:
    settings_env(
        smtp_host="127.0.0.1",
        smtp_port=port,
        smtp_starttls="true",
        smtp_username=USER,
        smtp_password=password,
    )


def test_mail_goes_only_over_the_encrypted_logged_in_connection(tls_relay, settings_env):
    port, sink = tls_relay
    _relay_settings(settings_env, port, PASSWORD)
    with Mailer() as mailer:
        mailer.send("bounces@example.org", "reader@example.net", MESSAGE)
        outcomes = mailer.send_many(
            [("bounces@example.org", f"reader{i}@example.net", MESSAGE) for i in range(5)]
        )
    assert outcomes == [None] * 5
    assert sorted(sink.recipients()) == sorted(
        ["reader@example.net", *(f"reader{i}@example.net" for i in range(5))]
    )
    assert sink.sessions == [(True, True)] * 6


def test_a_wrong_password_is_an_unreachable_relay_and_sends_nothing(tls_relay, settings_env):
    port, sink = tls_relay
    _relay_settings(settings_env, port, "wrong password")
    with Mailer() as mailer, pytest.raises(TransientFailure, match="SMTPAuthenticationError"):
        mailer.send("bounces@example.org", "reader@example.net", MESSAGE)
    assert sink.count() == 0


def test_a_certificate_the_service_cannot_verify_sends_nothing(
    tls_relay, settings_env, monkeypatch
):
    port, sink = tls_relay
    monkeypatch.setenv("SSL_CERT_FILE", "/nonexistent/ca.pem")  # the relay's cert is unknown
    _relay_settings(settings_env, port, PASSWORD)
    with Mailer() as mailer, pytest.raises(TransientFailure, match="SSLCertVerificationError"):
        mailer.send("bounces@example.org", "reader@example.net", MESSAGE)
    assert sink.count() == 0
