"""One Settings object, read from MAILING_* environment variables (see the README's table)."""

from __future__ import annotations

import os
from email.utils import parseaddr
from functools import lru_cache
from ipaddress import IPv4Network, IPv6Network, ip_network
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DEV_SECRET_KEY = "dev-only-secret-key-do-not-use-in-production"  # noqa: S105
MIN_SECRET_KEY_LENGTH = 32
# Amazon SNS signing certificates are served only from these hosts (tests point elsewhere).
SNS_CERT_URL_PATTERN = (
    r"^https://sns\.[a-z0-9-]+\.amazonaws\.com(\.cn)?/"
    r"SimpleNotificationService-[A-Za-z0-9]+\.pem$"
)


DEFAULT_POSTAL_ADDRESS = "Greater London Authority, City Hall, Kamal Chunchie Way, London E16 1ZE"


class ConfigError(RuntimeError):
    """Raised when the configuration cannot be used; the message says what to set."""


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="MAILING_", extra="ignore")

    env: Literal["dev", "production"] = "dev"
    database_url: str = "sqlite:///./var/mailing.db"
    broker_url: str | None = None
    redis_url: str | None = None
    secret_keys: str = DEV_SECRET_KEY
    base_url: str = "http://localhost:8000"

    smtp_host: str = "localhost"
    smtp_port: int = 25
    smtp_username: str | None = None
    smtp_password: str | None = None
    smtp_starttls: bool = False
    smtp_timeout: float = 30.0
    # Relay connections each worker process keeps open and busy at once (its lanes: each a thread
    # with its own connection and its own chunk), and the cap across all workers (leases in Redis
    # when MAILING_REDIS_URL is set; Postfix's smtpd_client_connection_count_limit is 50).
    smtp_connections: int = Field(default=24, ge=1, le=256)
    smtp_connections_total: int = Field(default=50, ge=1)
    from_address: str = "Health Inequalities Strategy <updates@localhost>"
    list_id: str = "Health Inequalities Strategy updates <health-inequalities.updates.localhost>"
    # Footer contact (issue 26): in every email's footer, HTML and text, and the console preview.
    reply_to: str | None = None  # the Reply-To header on every email; unset: none
    postal_address: str = DEFAULT_POSTAL_ADDRESS
    privacy_notice_url: str | None = None  # an http(s) link in every footer; unset: no link

    rate_limit_per_ip: int = 30
    confirmations_per_address_per_hour: int = 3
    confirm_max_age_days: int = 7
    erase_max_age_days: int = 7
    unsubscribed_retention_days: int = 30
    # Append-only, outside the database and its backups (mailing/subscribers/journal.py).
    erasure_journal: str = "var/erasure-journal.jsonl"
    max_body_bytes: int = 64 * 1024

    send_rate: float = 0.0  # messages a second across all workers; 0 means unlimited
    send_batch_size: int = 500  # recipients per batch task when a send starts
    send_parallelism: int = 16  # batch tasks in flight for one send at most
    send_task_seconds: float = 2.0  # a batch task hands the rest on to a fresh task after this
    send_commit_chunk: int = 50
    send_stall_seconds: float = 20.0  # no chunk settled anywhere for this long: re-drive sends
    notice_redrive_seconds: float = 60.0  # a notice still unsent after this is queued again
    reconcile_interval_seconds: float = 30.0  # how often beat runs the reconciler
    housekeeping_interval_seconds: float = 3600.0  # how often beat purges and snapshots figures
    send_retry_backoff: float = 5.0  # seconds before the first retry after a 4xx; doubles, jittered
    send_retry_backoff_max: float = 300.0
    send_max_retries: int = 20  # then reconcile picks the deliveries up again
    # The send guard (mailing/sending/guard.py): with at least this many copies attempted ...
    send_guard_min_attempted: int = 200
    send_guard_max_failure_rate: float = 0.05  # ... more than this share failed or bounced: pause

    allowed_origins: str = ""
    test_sends_per_hour: int = 20  # test copies one staff member may send in an hour

    # Security hardening (issue 10): who the client is behind a proxy; who may read /metrics.
    trusted_proxies: str = ""  # comma-separated CIDRs; empty: the socket's peer is the client
    metrics_token: str | None = None  # unset: /metrics open in dev, 404 in production

    # Staff sign-in (issue 14): API tokens expire this many days after they are issued.
    api_token_days: int = Field(default=90, ge=1, le=3650)
    # Issue 25: whether an API token (of scope "send") may send or schedule; off, only the
    # console (with its second factor) sends.
    api_send_by_token: bool = True
    # Issue 25: every send or schedule needs someone other than the update's author, who saw
    # it (the fingerprint of the version shown).
    require_review: bool = False
    # Staff single sign-on with OpenID Connect (issue 25); off while oidc_issuer is unset.
    oidc_issuer: str | None = None  # e.g. https://login.microsoftonline.com/{tenant}/v2.0
    oidc_client_id: str | None = None
    oidc_client_secret: str | None = None
    oidc_provider_name: str = "your organisation's account"  # "Sign in with {name}"
    oidc_scopes: str = "openid email profile"
    oidc_email_claim: str = "email"  # Entra ID: "preferred_username" (the UPN) if no email
    oidc_groups_claim: str = "groups"
    # "GROUP=ROLE,GROUP=ROLE": people in GROUP may sign in as ROLE without an invitation.
    oidc_role_map: str = ""
    oidc_mfa_amr: str = "mfa"  # amr values (comma-separated) that count as a second factor
    oidc_mfa_acr: str = ""  # acr values that do too

    # Deliverability (issue 13): return paths, `mailing inbound`, the SES webhook.
    bounce_domain: str | None = None  # unset: envelope sender is the From address, no mailto
    soft_bounce_limit: int = 3  # soft bounces, each on a different update, that count as hard ...
    soft_bounce_window_days: int = 30  # ... within this many days
    inbound_max_bytes: int = 1024 * 1024  # bounces and reports larger than this are refused (552)
    ses_topic_arns: str = ""  # SNS topics whose notifications are believed; empty: none
    sns_cert_url_pattern: str = SNS_CERT_URL_PATTERN  # where SNS signing certificates come from

    # Consent refresh (issue 24): ask again after this many years; 0 (the default) never asks.
    consent_refresh_years: int = Field(default=0, ge=0, le=50)

    @field_validator("base_url")
    @classmethod
    def _strip_slash(cls, value: str) -> str:
        return value.rstrip("/")

    @property
    def secret_key_list(self) -> list[str]:
        return [k.strip() for k in self.secret_keys.split(",") if k.strip()]

    @field_validator("bounce_domain")
    @classmethod
    def _no_empty_domain(cls, value: str | None) -> str | None:
        return value.strip().lower() or None if value else None

    @property
    def ses_topic_arn_list(self) -> list[str]:
        return [a.strip() for a in self.ses_topic_arns.split(",") if a.strip()]

    @property
    def trusted_proxy_networks(self) -> tuple[IPv4Network | IPv6Network, ...]:
        return _networks(self.trusted_proxies)

    def _check_oidc(self) -> None:
        """Single sign-on: an https issuer in production, a secret, and a role map that names
        our roles only (issue 25)."""
        if not self.oidc_issuer:
            return
        loopback = urlsplit(self.oidc_issuer).hostname in ("127.0.0.1", "localhost", "::1")
        if self.is_production and not (self.oidc_issuer.startswith("https://") or loopback):
            raise ConfigError("MAILING_OIDC_ISSUER must be an https:// URL in production.")
        if not (self.oidc_client_id and self.oidc_client_secret):
            raise ConfigError("MAILING_OIDC_ISSUER needs MAILING_OIDC_CLIENT_ID and _SECRET.")
        for pair in filter(None, (p.strip() for p in self.oidc_role_map.split(","))):
            group, _, role = pair.partition("=")
            if not group.strip() or role.strip() not in ("editor", "sender", "admin"):
                raise ConfigError(
                    f"MAILING_OIDC_ROLE_MAP: {pair!r} is not GROUP=editor|sender|admin."
                )

    @property
    def is_production(self) -> bool:
        return self.env == "production"

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")

    def check(self) -> None:
        """Refuse settings that would be unsafe; every command calls this before it starts."""
        self._check_oidc()
        try:
            _ = self.trusted_proxy_networks
        except ValueError as exc:
            raise ConfigError(
                f"MAILING_TRUSTED_PROXIES: {exc}; give comma-separated CIDRs such as 10.0.0.0/8."
            ) from exc
        if os.environ.get("MAILING_TRUST_FORWARDED_FOR", "").lower() in ("1", "true", "yes", "on"):
            # Never read: refuse rather than let an operator believe the proxy is trusted.
            raise ConfigError(
                "MAILING_TRUST_FORWARDED_FOR is no longer read: unset it, and name the proxies "
                "whose X-Forwarded-For to believe in MAILING_TRUSTED_PROXIES (CIDRs)."
            )
        _check_contact(self)
        keys = self.secret_key_list
        if not keys:
            raise ConfigError("MAILING_SECRET_KEYS is empty: set at least one secret key.")
        if self.is_production:
            if DEV_SECRET_KEY in keys:
                raise ConfigError(
                    "MAILING_ENV=production needs MAILING_SECRET_KEYS: a comma-separated list of "
                    f"random keys of at least {MIN_SECRET_KEY_LENGTH} characters "
                    "(e.g. python -c 'import secrets; print(secrets.token_urlsafe(48))')."
                )
            short = [i + 1 for i, k in enumerate(keys) if len(k) < MIN_SECRET_KEY_LENGTH]
            if short:
                raise ConfigError(
                    f"MAILING_SECRET_KEYS: key {short[0]} is shorter than "
                    f"{MIN_SECRET_KEY_LENGTH} characters; production needs long random keys."
                )


def _check_contact(settings: Settings) -> None:
    """The footer settings go into every email's headers and body: refuse what would break them."""
    for name, value in (
        ("MAILING_REPLY_TO", settings.reply_to),
        ("MAILING_POSTAL_ADDRESS", settings.postal_address),
        ("MAILING_PRIVACY_NOTICE_URL", settings.privacy_notice_url),
    ):
        if value is not None and any(c in value for c in "\r\n\x00"):
            raise ConfigError(f"{name} must be one line: it contains a line break.")
    if not settings.postal_address.strip():
        raise ConfigError(
            "MAILING_POSTAL_ADDRESS is empty: every email must give a postal address."
        )
    if settings.reply_to is not None:
        _, addr = parseaddr(settings.reply_to)
        local, _, domain = addr.rpartition("@")
        if not local or "." not in domain or any(c.isspace() for c in addr):
            raise ConfigError(
                "MAILING_REPLY_TO must be an email address, e.g. "
                "'Health Inequalities team <health.inequalities@london.gov.uk>'."
            )
    url = settings.privacy_notice_url
    if url is not None:
        parts = urlsplit(url)
        if (
            parts.scheme not in ("http", "https")
            or not parts.netloc
            or any(c.isspace() or c in '<>"' for c in url)
        ):
            raise ConfigError(
                "MAILING_PRIVACY_NOTICE_URL must be an http:// or https:// address, e.g. "
                "https://www.london.gov.uk/privacy."
            )


@lru_cache
def _networks(cidrs: str) -> tuple[IPv4Network | IPv6Network, ...]:
    # Cached: the per-IP limit asks on every public POST.
    return tuple(ip_network(c.strip(), strict=False) for c in cidrs.split(",") if c.strip())


@lru_cache
def get_settings() -> Settings:
    return Settings()


def templates_dir() -> Path:
    """Templates live at the top of the source tree, or inside the package when installed."""
    here = Path(__file__).resolve().parent
    for candidate in (here.parent / "templates", here / "_templates"):
        if candidate.is_dir():
            return candidate
    raise ConfigError("templates/ not found next to the mailing package")
