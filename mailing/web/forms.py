"""Reading and checking what residents send: one checker for the JSON API and the HTML form."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from fastapi import HTTPException, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from mailing.states import Frequency
from mailing.subscribers.addresses import Address, InvalidAddress, normalise
from mailing.themes import THEMES, UnknownTheme, normalise_themes

MAX_FIELD = 500


class FormErrors(Exception):
    def __init__(self, errors: dict[str, str], values: dict[str, Any] | None = None) -> None:
        super().__init__("; ".join(errors.values()))
        self.errors = errors
        self.values = values or {}

    def json(self) -> JSONResponse:
        """FastAPI's error shape, with messages a person understands."""
        detail = [
            {"loc": ["body", name], "msg": message, "type": "value_error"}
            for name, message in self.errors.items()
        ]
        return JSONResponse({"detail": detail}, status_code=422)


class SubscriptionIn(BaseModel):
    """Documents the JSON body of POST /subscriptions (the route checks it with `parse_signup`)."""

    email: str = Field(max_length=254, examples=["resident@example.com"])
    themes: list[str] = Field(
        default_factory=list, max_length=len(THEMES), examples=[["healthy-minds"]]
    )
    consent: bool = Field(description="Must be true: the person agreed to receive updates.")
    frequency: Frequency = Field(
        default=Frequency.IMMEDIATE,
        description="Each update as it is sent, or a weekly summary on Saturday mornings.",
    )


@dataclass
class Body:
    is_json: bool
    data: dict[str, Any] = field(default_factory=dict)


async def read_body(request: Request) -> Body:
    """The request's JSON object or form fields; FormErrors if it is neither."""
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype == "application/json" or ctype.endswith("+json"):
        try:
            data = json.loads(await request.body() or b"null")
        # RecursionError: the middleware refuses deep nesting first; this keeps a 422 if not.
        except (ValueError, UnicodeDecodeError, RecursionError) as exc:
            raise FormErrors({"body": "The request body is not valid JSON."}) from exc
        if not isinstance(data, dict):
            raise FormErrors({"body": "The request body must be a JSON object."})
        return Body(True, data)
    if ctype in ("application/x-www-form-urlencoded", "multipart/form-data"):
        form = await request.form()
        data = {}
        for key in set(form.keys()):
            values = form.getlist(key)
            if not all(isinstance(v, str) for v in values):
                raise FormErrors({key: "Files cannot be uploaded here."})
            data[key] = values if key == "themes" else values[-1]
        return Body(False, data)
    if ctype == "" and not await request.body():
        return Body(False, {})
    raise HTTPException(
        415, "Send JSON (application/json) or a form (application/x-www-form-urlencoded)."
    )


def text_field(
    data: Mapping[str, Any], name: str, errors: dict[str, str], *, limit: int = MAX_FIELD
) -> str:
    value = data.get(name, "")
    if value is None:
        return ""
    if not isinstance(value, str):
        errors[name] = f"'{name}' must be text."
        return ""
    if "\r" in value or "\n" in value or "\x00" in value:
        errors[name] = f"'{name}' cannot contain line breaks."
        return ""
    if len(value) > limit:
        errors[name] = f"'{name}' is too long: at most {limit} characters."
        return ""
    return value


def theme_list(
    data: Mapping[str, Any], errors: dict[str, str], *, empty_means_all: bool
) -> list[str]:
    raw = data.get("themes", [])
    if raw is None:
        raw = []
    if isinstance(raw, str):
        raw = [raw]
    if not isinstance(raw, list) or not all(isinstance(t, str) for t in raw):
        errors["themes"] = "Themes must be a list of theme names."
        return []
    if len(raw) > 20:
        errors["themes"] = "Too many themes: there are only five."
        return []
    try:
        return normalise_themes(raw, empty_means_all=empty_means_all)
    except UnknownTheme as exc:
        errors["themes"] = str(exc)
        return []


def frequency_field(data: Mapping[str, Any], errors: dict[str, str]) -> Frequency | None:
    """The `frequency` asked for, or None when none was given. An empty one is not "none given":
    the contract allows only the two values (no form of ours sends an empty one)."""
    raw = data.get("frequency")
    if raw is None:
        return None
    if isinstance(raw, str) and raw in Frequency.__members__.values():
        return Frequency(raw)
    errors["frequency"] = "Choose how often: " + " or ".join(f"'{f.value}'" for f in Frequency)
    return None


@dataclass(frozen=True)
class Signup:
    address: Address
    themes: list[str]
    source: str | None
    honeypot: bool
    values: dict[str, Any]
    frequency: Frequency = Frequency.IMMEDIATE


def parse_signup(data: Mapping[str, Any], *, from_form: bool, referer: str | None) -> Signup:
    errors: dict[str, str] = {}
    values: dict[str, Any] = {}
    raw_email = data.get("email")
    address: Address | None = None
    if raw_email is None or raw_email == "":
        errors["email"] = "Enter your email address."
    elif not isinstance(raw_email, str):
        errors["email"] = "The email address must be text."
    else:
        values["email"] = raw_email if len(raw_email) <= 254 else ""
        try:
            address = normalise(raw_email)
        except InvalidAddress as exc:
            errors["email"] = str(exc)
    themes = theme_list(data, errors, empty_means_all=True)
    # Re-show only what was ticked: none ticked must not come back as all five ticked.
    values["themes"] = data.get("themes") if isinstance(data.get("themes"), list) else []

    consent = data.get("consent")
    given = consent in ("yes", "on", "true") if from_form else consent is True
    values["consent"] = given
    if not given:
        errors["consent"] = (
            "Tick the box to agree to getting updates by email."
            if from_form
            else "'consent' must be true: we only send updates to people who agree."
        )
    frequency = frequency_field(data, errors) or Frequency.IMMEDIATE
    values["frequency"] = frequency.value
    source = text_field(data, "source", errors) or _page_of(referer)
    values["source"] = source
    honeypot = bool(text_field(data, "website", errors))
    if errors:
        raise FormErrors(errors, values)
    assert address is not None
    return Signup(address, themes, source or None, honeypot, values, frequency)


def _page_of(referer: str | None) -> str:
    """Only the page (scheme, host, path): never a query string that might carry data."""
    if not referer or len(referer) > 2000 or "\n" in referer or "\r" in referer:
        return ""
    parts = urlsplit(referer)
    if parts.scheme not in ("http", "https"):
        return ""
    return f"{parts.scheme}://{parts.netloc}{parts.path}"[:MAX_FIELD]
