"""The one Jinja2 environment for pages and emails (HTML autoescaped, text not)."""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from jinja2 import Environment, FileSystemLoader, select_autoescape

from mailing.config import get_settings, templates_dir
from mailing.themes import THEMES


@lru_cache
def environment() -> Environment:
    env = Environment(
        loader=FileSystemLoader(str(templates_dir())),
        autoescape=select_autoescape(enabled_extensions=("html", "xml"), default_for_string=False),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.globals["THEMES"] = THEMES
    env.globals["base_url"] = get_settings().base_url
    settings = get_settings()
    # "Sign in with {sso_name}" on the console's sign-in and re-check pages; empty: no SSO.
    sso_on = bool(settings.oidc_issuer and settings.oidc_client_id)
    env.globals["sso_name"] = settings.oidc_provider_name if sso_on else ""
    env.globals["postal_address"] = settings.postal_address
    env.globals["privacy_notice_url"] = settings.privacy_notice_url
    return env


def compile_emails() -> None:
    """Compile every email template now (a worker's parent does, before its pool forks, so no
    pool process compiles them at the start of its first send)."""
    env = environment()
    for name in env.list_templates(filter_func=lambda n: n.startswith("emails/")):
        env.get_template(name)


def render(name: str, **context: Any) -> str:
    return environment().get_template(name).render(**context)
