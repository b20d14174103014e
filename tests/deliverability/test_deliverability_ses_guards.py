"""The SES webhook's guards on the production defaults (with SES configured: a topic, and the
loopback "SNS host" as the certificate pattern): the SES notification inside a signed SNS
message gets the same depth guard as any JSON body, and signing certificates are fetched at
most once per URL and time, failures remembered too, for a bounded number of URLs."""

from __future__ import annotations

import json
import logging
from typing import Any

import pytest
from fastapi.testclient import TestClient

from mailing.deliverability import sns
from mailing.states import SubscriberStatus
from tests.deliverability.test_deliverability_ses import (
    SnsHost,
    _permanent,
    _post,
)
from tests.deliverability.test_deliverability_ses import (
    sns_host as _sns_host,  # noqa: F401  (the fixture)
)
from tests.support.deliverability import sent_update, subscriber_status
from tests.support.helpers import table_snapshot

DEEP_MESSAGE = "[" * 20_000 + "]" * 20_000  # Python's parser recurses once per level


@pytest.fixture
def sns_host(request: pytest.FixtureRequest) -> SnsHost:
    """The loopback SNS host of test_deliverability_ses.py (imported above as `_sns_host`)."""
    host: SnsHost = request.getfixturevalue("_sns_host")
    return host


@pytest.fixture
def ses(sns_host: SnsHost, settings_env: Any, client: Any) -> Any:
    """The production app, with SES configured as the README says (after sns_host's settings)."""
    from mailing.web.app import create_app

    settings_env(env="production")
    with TestClient(create_app(), raise_server_exceptions=False) as c:
        yield c


def _no_traceback(caplog: pytest.LogCaptureFixture) -> None:
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]


def test_a_signed_notification_whose_message_nests_too_deep_is_ignored_not_a_500(
    ses: TestClient, sns_host: SnsHost, caplog: pytest.LogCaptureFixture
) -> None:
    sent_update(1)
    before = table_snapshot()
    caplog.set_level(logging.INFO)
    message = sns_host.sign({"Type": "Notification", "Message": DEEP_MESSAGE})
    answer = _post(ses, message)
    assert answer.status_code == 200, answer.text[:200]
    assert answer.json() == {"status": "ignored"}
    assert table_snapshot() == before
    _no_traceback(caplog)


def test_an_sns_body_nested_too_deep_is_422_whatever_its_content_type(
    ses: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    answer = _post(ses, DEEP_MESSAGE.encode())  # as SNS posts: text/plain
    assert answer.status_code == 422
    _no_traceback(caplog)


def test_a_certificate_that_cannot_be_fetched_is_not_fetched_again_for_each_request(
    ses: TestClient, sns_host: SnsHost
) -> None:
    [copy] = sent_update(1)
    missing = sns_host.origin + "/SimpleNotificationService-0000dead.pem"  # the host says 404
    for _ in range(5):
        message = sns_host.sign(_permanent(copy.return_path))
        message["SigningCertURL"] = missing
        assert _post(ses, message).status_code == 503
    assert sns_host.gets.count("/SimpleNotificationService-0000dead.pem") == 1
    assert subscriber_status(copy.subscriber_id) == SubscriberStatus.ACTIVE
    good = _post(ses, sns_host.sign(_permanent(copy.return_path)))  # another URL: its own entry
    assert good.status_code == 200 and sns_host.cert_fetches == 1


def test_at_most_32_certificate_urls_are_remembered_least_recently_used_first_out(
    ses: TestClient, sns_host: SnsHost
) -> None:
    [copy] = sent_update(1)
    paths = [f"/SimpleNotificationService-{i:04x}.pem" for i in range(sns.MAX_CERT_URLS + 8)]
    for path in paths:
        message = sns_host.sign(_permanent(copy.return_path))
        message["SigningCertURL"] = sns_host.origin + path
        assert _post(ses, message).status_code == 503
    remembered = [url.removeprefix(sns_host.origin) for url in sns.certificates.urls()]
    assert remembered == paths[-sns.MAX_CERT_URLS :]
    assert len(sns_host.gets) == len(paths)


def test_a_kept_certificate_or_failure_is_fetched_again_after_its_time() -> None:
    fetched: list[str] = []
    now = [1000.0]

    def fetch(url: str) -> str:
        fetched.append(url)
        if url.endswith("bad"):
            raise sns.CertificateUnavailable("URLError")
        return "key"

    cache = sns.Certificates(fetch=fetch, clock=lambda: now[0], size=2)
    assert cache.key("good") == "key" and cache.key("good") == "key"
    for _ in range(3):
        with pytest.raises(sns.CertificateUnavailable):
            cache.key("bad")
    assert fetched == ["good", "bad"]
    now[0] += sns.FAILURE_TTL + 1
    with pytest.raises(sns.CertificateUnavailable):
        cache.key("bad")
    assert cache.key("good") == "key"
    assert fetched == ["good", "bad", "bad"]
    now[0] += sns.CERT_TTL + 1
    assert cache.key("good") == "key"
    assert fetched == ["good", "bad", "bad", "good"]


def test_the_message_field_is_still_read_when_it_is_shallow(
    ses: TestClient, sns_host: SnsHost
) -> None:
    [copy] = sent_update(1)
    answer = _post(ses, sns_host.sign(_permanent(copy.return_path)))
    assert answer.status_code == 200
    assert json.loads(answer.text)["status"] != "ignored"
    assert subscriber_status(copy.subscriber_id) == SubscriberStatus.BOUNCED
