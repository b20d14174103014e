"""Single sign-on with OpenID Connect (issue 25), against a real provider: panva's certified
`oidc-provider` (tests/oidc/, run with node), started here on a free port. The tests play the
person at the provider (tests/oidc/provider.mjs completes its login for the account they name)
and follow its redirects with a real HTTP client; nothing on our side is replaced.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from urllib.parse import parse_qs, urlencode, urljoin, urlsplit, urlunsplit

import httpx
import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient
from sqlmodel import select

from mailing.models import AuditLog, Staff, StaffSession, utcnow
from mailing.states import StaffRole
from tests.support.helpers import count
from tests.support.staff import make_staff

OIDC_DIR = Path(__file__).resolve().parents[1] / "oidc"
CALLBACK = "http://testserver/admin/login/sso/callback"
CLIENT_SECRET = "test-client-secret-0123456789"


@pytest.fixture(scope="module")
def provider() -> Iterator[str]:
    node = shutil.which("node")
    assert node, "node is needed for the single sign-on tests"
    if not (OIDC_DIR / "node_modules" / "oidc-provider").exists():
        subprocess.run(
            ["npm", "ci", "--no-audit", "--no-fund", "--loglevel=error"], cwd=OIDC_DIR, check=True
        )
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    process = subprocess.Popen(
        [node, str(OIDC_DIR / "provider.mjs"), str(port), CALLBACK],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "NODE_ENV": "test"},
    )
    issuer = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            if httpx.get(f"{issuer}/.well-known/openid-configuration").status_code == 200:
                break
        except httpx.HTTPError:
            pass
        assert process.poll() is None, "the OpenID provider exited"
        assert time.monotonic() < deadline, "the OpenID provider did not start"
        time.sleep(0.1)
    yield issuer
    process.terminate()
    process.wait(timeout=10)


@pytest.fixture
def sso(provider, settings_env) -> str:
    settings_env(
        oidc_issuer=provider,
        oidc_client_id="mailing-console",
        oidc_client_secret=CLIENT_SECRET,
        oidc_provider_name="Test Provider",
        oidc_scopes="openid email groups",
        oidc_role_map="comms-senders=sender",
    )
    return provider


def _at_provider(provider: str, account: str, amr=("pwd", "mfa"), tamper: str = "") -> None:
    httpx.post(
        f"{provider}/_test/next", json={"account": account, "amr": list(amr), "tamper": tamper}
    ).raise_for_status()


def _to_callback(location: str) -> str:
    """Follow the provider's redirects as a browser would, up to the way back to us."""
    url = location
    with httpx.Client(follow_redirects=False) as browser:
        for _ in range(12):
            if url.startswith("http://testserver/"):
                parts = urlsplit(url)
                return urlunsplit(("", "", parts.path, parts.query, ""))
            answer = browser.get(url)
            assert answer.status_code in (302, 303), (answer.status_code, answer.text[:300])
            url = urljoin(url, answer.headers["location"])
    raise AssertionError("the provider never sent the browser back")


def _sign_in(web, provider, account, **at_provider):
    _at_provider(provider, account, **at_provider)
    start = web.get("/admin/login/sso?next=/admin/figures", follow_redirects=False)
    assert start.status_code == 303, start.text
    return web.get(_to_callback(start.headers["location"]), follow_redirects=False)


def test_the_sign_in_page_offers_the_provider_only_when_configured(client, settings_env, sso):
    assert "Sign in with Test Provider" in client.get("/admin/login").text
    settings_env(oidc_issuer="")
    assert "Sign in with" not in client.get("/admin/login").text
    assert client.get("/admin/login/sso", follow_redirects=False).status_code == 404


def test_a_mapped_person_with_mfa_signs_in_with_pkce_state_and_nonce(client, sso, session):
    _at_provider(sso, "alice")
    start = client.get("/admin/login/sso?next=/admin/figures", follow_redirects=False)
    asked = parse_qs(urlsplit(start.headers["location"]).query)
    assert asked["code_challenge_method"] == ["S256"] and asked["code_challenge"][0]
    assert asked["state"][0] and asked["nonce"][0] and asked["redirect_uri"] == [CALLBACK]
    answer = client.get(_to_callback(start.headers["location"]), follow_redirects=False)
    assert answer.status_code == 303, answer.text
    assert answer.headers["location"] == "/admin/figures"
    assert client.get("/admin/figures").status_code == 200
    alice = session.exec(select(Staff).where(Staff.email == "alice@gla.example")).one()
    assert alice.role == StaffRole.SENDER and alice.password_hash is None
    signed = session.exec(select(AuditLog).where(AuditLog.action == "console-sign-in")).one()
    assert signed.detail == "single sign-on (mfa)"


def test_an_id_token_for_another_audience_is_refused(client, sso):
    answer = _sign_in(client, sso, "alice", tamper="aud")
    assert answer.status_code == 400 and "did not check out" in answer.text
    assert count("staff_session") == 0 and count("staff") == 0


def test_an_expired_id_token_is_refused(client, sso):
    answer = _sign_in(client, sso, "alice", tamper="exp")
    assert answer.status_code == 400 and "did not check out" in answer.text
    assert count("staff_session") == 0


def test_a_replayed_code_is_refused(client, sso):
    _at_provider(sso, "alice")
    start = client.get("/admin/login/sso", follow_redirects=False)
    flow = client.cookies.get("admin_sso_flow")
    back = _to_callback(start.headers["location"])
    assert client.get(back, follow_redirects=False).status_code == 303
    thief = TestClient(client.app)
    thief.cookies.set("admin_sso_flow", flow, path="/admin")
    replayed = thief.get(back, follow_redirects=False)
    assert replayed.status_code == 400 and "refused" in replayed.text
    assert count("staff_session") == 1


def test_a_bad_state_is_refused_before_the_code_is_used(client, sso):
    _at_provider(sso, "alice")
    start = client.get("/admin/login/sso", follow_redirects=False)
    flow = client.cookies.get("admin_sso_flow")
    back = urlsplit(_to_callback(start.headers["location"]))
    query = {k: v[0] for k, v in parse_qs(back.query).items()}
    forged = {**query, "state": "not-the-state"}
    answer = client.get(f"{back.path}?{urlencode(forged)}", follow_redirects=False)
    assert answer.status_code == 400 and "does not belong" in answer.text
    # The code was never spent: with the right state it still signs in.
    client.cookies.set("admin_sso_flow", flow, path="/admin")
    assert client.get(f"{back.path}?{urlencode(query)}", follow_redirects=False).status_code == 303


def test_someone_neither_invited_nor_in_a_mapped_group_is_refused(client, sso):
    answer = _sign_in(client, sso, "bob")
    assert answer.status_code == 403 and "not been invited" in answer.text
    assert count("staff") == 0 and count("staff_session") == 0


def test_someone_invited_signs_in_even_without_the_group(client, sso, session):
    make_staff(session, "bob@gla.example", "editor")
    answer = _sign_in(client, sso, "bob")
    assert answer.status_code == 303 and client.get("/admin").status_code == 200


def test_a_person_disabled_here_is_refused_though_the_provider_says_yes(client, sso, session):
    carol = make_staff(session, "carol@gla.example", "sender")
    from mailing.staff.members import disable

    disable(session, carol)
    session.commit()
    answer = _sign_in(client, sso, "carol")
    assert answer.status_code == 403 and "turned off" in answer.text
    assert count("staff_session") == 0


def test_without_mfa_at_the_provider_our_own_second_factor_is_asked(client, sso, session):
    make_staff(session, "carol@gla.example", "sender")
    from tests.support.staff import give_totp

    give_totp("carol@gla.example")
    answer = _sign_in(client, sso, "carol", amr=("pwd",))
    assert answer.headers["location"].startswith("/admin/login/second-factor")
    assert client.get("/admin", follow_redirects=False).status_code == 303
    assert count("staff_session", "WHERE factor_at IS NULL") == 1


def test_the_ten_minute_recheck_is_a_fresh_round_trip_with_mfa(client, sso, session):
    assert _sign_in(client, sso, "alice").status_code == 303
    with session.bind.begin() as conn:
        conn.execute(sa.update(StaffSession).values(factor_at=utcnow() - timedelta(minutes=11)))
    _at_provider(sso, "alice")
    start = client.get("/admin/reauth/sso", follow_redirects=False)
    asked = parse_qs(urlsplit(start.headers["location"]).query)
    assert asked["prompt"] == ["login"] and asked["max_age"] == ["0"]
    back = client.get(_to_callback(start.headers["location"]), follow_redirects=False)
    assert back.status_code == 303
    fresh = session.exec(select(StaffSession)).one()
    session.refresh(fresh)
    assert utcnow() - fresh.factor_at.replace(tzinfo=utcnow().tzinfo) < timedelta(minutes=1)
    # Without MFA the round trip does not count as the second factor.
    _at_provider(sso, "alice", amr=("pwd",))
    start = client.get("/admin/reauth/sso", follow_redirects=False)
    refused = client.get(_to_callback(start.headers["location"]), follow_redirects=False)
    assert refused.status_code == 403


def test_production_sso_sign_in_end_to_end(database, smtp, worker, provider, settings_env):
    from mailing.web.app import create_app

    settings_env(
        env="production",
        oidc_issuer=provider,
        oidc_client_id="mailing-console",
        oidc_client_secret=CLIENT_SECRET,
        oidc_scopes="openid email groups",
        oidc_role_map="comms-senders=sender",
    )
    with TestClient(create_app(), base_url="https://testserver") as web:
        assert "Sign in with your organisation" in web.get("/admin/login").text
        answer = _sign_in(web, provider, "alice")
        assert answer.status_code == 303, answer.text
        assert "Secure" in answer.headers["set-cookie"]
        assert web.get("/admin").status_code == 200


def test_unsafe_or_broken_sso_settings_are_refused_at_start(settings_env):
    from mailing.config import ConfigError, get_settings

    for values, says in (
        ({"env": "production", "oidc_issuer": "http://idp.example"}, "https://"),
        ({"oidc_issuer": "https://idp.example"}, "CLIENT_ID"),
        (
            {
                "oidc_issuer": "https://idp.example",
                "oidc_client_id": "x",
                "oidc_client_secret": "y",
                "oidc_role_map": "staff=owner",
            },
            "ROLE_MAP",
        ),
    ):
        settings_env(**values)
        with pytest.raises(ConfigError, match=says):
            get_settings().check()
        settings_env(
            env="dev", oidc_issuer="", oidc_client_id="", oidc_client_secret="", oidc_role_map=""
        )
