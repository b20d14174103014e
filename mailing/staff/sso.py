"""Staff single sign-on with OpenID Connect (Microsoft Entra ID or any certified provider).

The authorisation-code flow with PKCE (S256), `state` and `nonce` (Authlib's helpers), the
code exchanged at the provider's token endpoint, and the ID token checked in full with joserfc
(Authlib's JOSE library): signature against the provider's JWKS, issuer, audience (our client
id), expiry, and the nonce of this round trip. Who may come in: someone invited here (found by
address), or someone whose provider groups map to a role (MAILING_OIDC_ROLE_MAP); a person
disabled here is refused whatever the provider says. If the provider reports multi-factor
sign-in (`amr`/`acr`), that counts as the second factor; otherwise ours is still asked.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

import httpx
from authlib.common.security import generate_token
from authlib.oauth2.rfc7636 import create_s256_code_challenge
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet
from sqlmodel import Session

from mailing.config import Settings, get_settings
from mailing.errors import InvalidLink
from mailing.models import Staff
from mailing.staff import members
from mailing.staff.audit import AuditAction, audit
from mailing.states import StaffRole
from mailing.subscribers.addresses import InvalidAddress, normalise
from mailing.subscribers.tokens import Purpose, sign, verify

TIMEOUT = httpx.Timeout(10.0)
ALGORITHMS = ("RS256", "RS384", "RS512", "PS256", "ES256", "ES384")


class SsoRefused(Exception):
    """The round trip failed (400) or the person may not come in (403); the message is safe to
    show."""

    def __init__(self, message: str, status_code: int = 400) -> None:
        super().__init__(message)
        self.status_code = status_code


@dataclass(frozen=True)
class Outcome:
    staff: Staff
    mfa: bool  # the provider reported a multi-factor sign-in
    reauth_of: str  # a re-check: the key of the session it was started from; else empty
    next_path: str


def enabled(settings: Settings | None = None) -> bool:
    settings = settings or get_settings()
    return bool(settings.oidc_issuer and settings.oidc_client_id)


def _metadata(settings: Settings) -> dict[str, Any]:
    issuer = (settings.oidc_issuer or "").rstrip("/")
    try:
        found = httpx.get(f"{issuer}/.well-known/openid-configuration", timeout=TIMEOUT)
        found.raise_for_status()
        metadata: dict[str, Any] = found.json()
    except (httpx.HTTPError, ValueError) as exc:
        raise SsoRefused(
            "The sign-in provider could not be reached. Try again shortly.", 502
        ) from exc
    if str(metadata.get("issuer", "")).rstrip("/") != issuer:
        raise SsoRefused("The sign-in provider's settings do not match MAILING_OIDC_ISSUER.")
    return metadata


def start(redirect_uri: str, next_path: str, reauth_of: str | None) -> tuple[str, str]:
    """The provider URL to send the browser to, and the signed value of the flow cookie that
    holds this round trip's state, nonce and PKCE verifier (10 minutes)."""
    settings = get_settings()
    metadata = _metadata(settings)
    state, nonce, verifier = generate_token(32), generate_token(32), generate_token(64)
    params = {
        "response_type": "code",
        "client_id": settings.oidc_client_id,
        "redirect_uri": redirect_uri,
        "scope": settings.oidc_scopes,
        "state": state,
        "nonce": nonce,
        "code_challenge": create_s256_code_challenge(verifier),
        "code_challenge_method": "S256",
    }
    if reauth_of:
        # A re-check: the provider must really sign the person in again, not reuse a session.
        params.update(prompt="login", max_age="0")
    flow = sign(
        Purpose.SSO_FLOW,
        {"s": 0, "st": state, "n": nonce, "v": verifier, "next": next_path, "r": reauth_of or ""},
    )
    return f"{metadata['authorization_endpoint']}?{urlencode(params)}", flow


def finish(
    session: Session, flow_cookie: str | None, query: dict[str, str], redirect_uri: str
) -> Outcome:
    """Check the provider's answer against the flow cookie, exchange the code, validate the ID
    token and decide who this is. SsoRefused for anything wrong."""
    settings = get_settings()
    try:
        flow = verify(Purpose.SSO_FLOW, flow_cookie or "")
    except InvalidLink as exc:
        raise SsoRefused("That sign-in took too long or was not started here. Try again.") from exc
    if not secrets.compare_digest(str(query.get("state", "")), str(flow.get("st", ""))):
        raise SsoRefused("That sign-in answer does not belong to this browser. Try again.")
    if query.get("error") or not query.get("code"):
        raise SsoRefused("The sign-in provider did not sign you in.")
    metadata = _metadata(settings)
    id_token = _exchange(settings, metadata, query["code"], redirect_uri, str(flow["v"]))
    claims = _validated(settings, metadata, id_token, str(flow["n"]))
    staff = _person(session, settings, claims)
    amr = claims.get("amr")
    given = {str(a) for a in amr} if isinstance(amr, list) else set()
    mfa = bool(set(_listed(settings.oidc_mfa_amr)) & given) or (
        str(claims.get("acr", "")) in _listed(settings.oidc_mfa_acr)
    )
    return Outcome(staff, mfa, str(flow.get("r") or ""), str(flow.get("next") or "/admin"))


def _exchange(
    settings: Settings, metadata: dict[str, Any], code: str, redirect_uri: str, verifier: str
) -> str:
    try:
        answer = httpx.post(
            str(metadata["token_endpoint"]),
            data={
                "grant_type": "authorization_code",
                "code": code,
                "redirect_uri": redirect_uri,
                "code_verifier": verifier,
            },
            auth=(settings.oidc_client_id or "", settings.oidc_client_secret or ""),
            timeout=TIMEOUT,
        )
        body = answer.json()
    except (httpx.HTTPError, ValueError, KeyError) as exc:
        raise SsoRefused("The sign-in provider could not be reached. Try again shortly.") from exc
    if answer.status_code != 200 or not isinstance(body.get("id_token"), str):
        # A code used twice, expired or for another client lands here.
        raise SsoRefused("The sign-in provider refused that sign-in. Start again.")
    return str(body["id_token"])


def _validated(
    settings: Settings, metadata: dict[str, Any], id_token: str, nonce: str
) -> dict[str, Any]:
    try:
        keys = httpx.get(str(metadata["jwks_uri"]), timeout=TIMEOUT).json()
        token = jwt.decode(id_token, KeySet.import_key_set(keys), algorithms=list(ALGORITHMS))
        jwt.JWTClaimsRegistry(
            iss={"essential": True, "value": metadata["issuer"]},
            aud={"essential": True, "value": str(settings.oidc_client_id)},
            exp={"essential": True},
            sub={"essential": True},
            nonce={"essential": True, "value": nonce},
        ).validate(token.claims)
    except (JoseError, httpx.HTTPError, ValueError, KeyError, TypeError) as exc:
        raise SsoRefused("The sign-in provider's answer did not check out. Start again.") from exc
    return dict(token.claims)


def _listed(value: str) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()]


def role_map(settings: Settings) -> dict[str, StaffRole]:
    mapped: dict[str, StaffRole] = {}
    for pair in _listed(settings.oidc_role_map):
        group, _, role = pair.partition("=")
        if role.strip() in {r.value for r in StaffRole}:
            mapped[group.strip()] = StaffRole(role.strip())
    return mapped


def _person(session: Session, settings: Settings, claims: dict[str, Any]) -> Staff:
    try:
        email = normalise(str(claims.get(settings.oidc_email_claim) or "")).email
    except InvalidAddress as exc:
        raise SsoRefused("The sign-in provider did not give an email address.") from exc
    staff = members.find_staff(session, email)
    if staff is not None:
        if staff.disabled_at is not None:
            raise SsoRefused("Your access here has been turned off. Ask an admin.", 403)
        return staff
    groups = claims.get(settings.oidc_groups_claim)
    groups = [str(g) for g in groups] if isinstance(groups, list) else []
    roles = [role for group, role in role_map(settings).items() if group in groups]
    if not roles:
        raise SsoRefused("You have not been invited here. Ask an admin for an invitation.", 403)
    best = max(roles, key=lambda r: list(StaffRole).index(r))
    staff, _token = members.create_staff(session, email, best)
    audit(session, None, AuditAction.STAFF_CREATED, None, f"staff {staff.id} by single sign-on")
    session.commit()
    return staff
