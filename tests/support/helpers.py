"""Small helpers the tests share: reading links out of captured emails, counting rows."""

from __future__ import annotations

import re
from typing import Any

import sqlalchemy as sa

from mailing.db import get_engine

LINK = re.compile(r"http://testserver(/[a-z-]+/[A-Za-z0-9._-]+)")


def links(message: Any, kind: str) -> list[str]:
    """Paths like /confirm/<token> found in a captured email's plain-text part."""
    return [p for p in LINK.findall(message.part("plain")) if p.startswith(f"/{kind}/")]


def only_link(message: Any, kind: str) -> str:
    found = sorted(set(links(message, kind)))
    assert len(found) == 1, found
    return found[0]


def count(table: str, where: str = "") -> int:
    with get_engine().connect() as conn:
        return int(conn.execute(sa.text(f'SELECT COUNT(*) FROM "{table}" {where}')).scalar_one())


def table_snapshot() -> dict[str, int]:
    """Row counts of every table: a test asserts a bad request changed none of them."""
    from sqlmodel import SQLModel

    return {t.name: count(t.name) for t in SQLModel.metadata.sorted_tables}


def subscribe(client: Any, email: str, themes: list[str] | None = None, **extra: Any) -> Any:
    body: dict[str, Any] = {"email": email, "consent": True}
    if themes is not None:
        body["themes"] = themes
    body.update(extra)
    return client.post("/subscriptions", json=body)


def self_signed_pem(key: Any, common_name: str, *, ip: str | None = None) -> bytes:
    """A self-signed certificate (PEM) for this key, valid from a day ago for 30 days; with
    `ip`, for that address too (a TLS client checks it against the host it connected to)."""
    from datetime import UTC, datetime, timedelta
    from ipaddress import ip_address

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.x509.oid import NameOID

    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = datetime.now(UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=30))
    )
    if ip is not None:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ip_address(ip))]), critical=False
        ).add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
    return builder.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)


def lock_waiters() -> int:
    """PostgreSQL: how many sessions of this run's database wait for a lock right now."""
    with get_engine().connect() as conn:
        waiting = conn.execute(
            sa.text(
                "SELECT COUNT(*) FROM pg_stat_activity "
                "WHERE datname = current_database() AND wait_event_type = 'Lock'"
            )
        ).scalar_one()
    return int(waiting)


def someone_waits_for_a_lock() -> bool:
    """PostgreSQL: is any session of this run's database waiting for a row lock right now?"""
    return lock_waiters() > 0
