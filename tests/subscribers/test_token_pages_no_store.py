"""Every answer on a path holding a token is `Cache-Control: no-store`: valid or not, GET or POST,
page, JSON or error; and production answers the same."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from mailing.subscribers import links
from mailing.subscribers.signup import confirmation_token
from mailing.subscribers.tokens import Purpose
from mailing.web.app import create_app
from tests.support.selfservice import active_subscriber

BAD = "forged.token"


def _token_paths(client, smtp, session) -> dict[str, str]:
    """Each token route with a valid token: /erase last, as its POST erases the subscriber."""
    sub = active_subscriber(client, smtp, session, "cached@example.org", ["healthy-minds"])
    return {
        "confirm": f"/confirm/{confirmation_token(sub, ['healthy-minds'])}",
        "preferences": f"/preferences/{links.token_for(Purpose.MANAGE, sub)}",
        "my-data": f"/my-data/{links.token_for(Purpose.EXPORT, sub)}",
        "unsubscribe": f"/unsubscribe/{links.token_for(Purpose.UNSUBSCRIBE, sub)}",
        "erase": f"/erase/{links.token_for(Purpose.ERASE, sub)}",
    }


def _answers(client, paths: dict[str, str]):
    for name, path in paths.items():
        bad = f"/{name}/{BAD}"
        yield f"GET {name}", client.get(path)
        yield f"GET {name} invalid", client.get(bad)
        yield f"GET {name} invalid JSON", client.get(bad, headers={"accept": "application/json"})
        if name == "my-data":
            yield "POST my-data (not allowed)", client.post(path)
            continue
        if name == "preferences":
            yield "POST preferences 422", client.post(path, json={})
            yield "POST preferences export", client.post(path, json={"action": "export"})
            yield "POST preferences", client.post(path, data={"action": "save", "themes": ["x"]})
        else:
            yield f"POST {name}", client.post(path)
        yield f"POST {name} invalid", client.post(bad)
        yield f"POST {name} too large", client.post(bad, content=b"x" * 70_000)


def _assert_no_store(client, smtp, session):
    seen = set()
    for what, answer in _answers(client, _token_paths(client, smtp, session)):
        seen.add(answer.status_code)
        assert answer.headers.get("cache-control") == "no-store", (what, answer.status_code)
    assert {200, 202, 400, 405, 413, 422} <= seen


def test_every_token_route_answers_no_store(client, smtp, session):
    _assert_no_store(client, smtp, session)


def test_every_token_route_answers_no_store_in_production(
    database, smtp, worker, session, settings_env
):
    settings_env(env="production")
    with TestClient(create_app(), raise_server_exceptions=False) as production:
        _assert_no_store(production, smtp, session)


@pytest.mark.parametrize("path", ["/", "/erasure-requests", "/healthz", "/check-your-email"])
def test_pages_without_a_token_are_not_marked(client, path):
    assert "no-store" not in client.get(path).headers.get("cache-control", "")
