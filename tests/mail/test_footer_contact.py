"""Every email's footer gives the organisation's postal address and privacy-notice link (HTML and
text, and the console preview), and every email carries MAILING_REPLY_TO as its Reply-To; a
hostile value is refused when a command starts, with a message naming the setting."""

from __future__ import annotations

import os
import subprocess
import sys
from email import message_from_bytes, policy

import pytest

from mailing.config import DEFAULT_POSTAL_ADDRESS, ConfigError, Settings
from tests.staff.test_console import make_update, signed_in_client
from tests.support.helpers import subscribe

PRIVACY = "https://www.london.gov.uk/privacy"
REPLY_TO = "Health Inequalities team <health.inequalities@london.gov.uk>"


def _parts(mail):
    message = message_from_bytes(mail.raw, policy=policy.default)
    html = message.get_body(("html",)).get_content()
    text = message.get_body(("plain",)).get_content()
    return message, html, text


def test_every_email_has_the_reply_to_address_and_the_footer(client, smtp, settings_env):
    settings_env(reply_to=REPLY_TO, privacy_notice_url=PRIVACY, postal_address="City Hall, E16")
    subscribe(client, "footer@example.org")
    [mail] = smtp.outbox.wait_for(1)
    message, html, text = _parts(mail)
    assert message["Reply-To"] == REPLY_TO
    assert "City Hall, E16" in html and f'href="{PRIVACY}"' in html
    assert "City Hall, E16" in text and f"Privacy notice: {PRIVACY}" in text


def test_on_the_defaults_the_footer_gives_the_city_hall_address(prod, smtp):
    # Production, every footer setting at its default: the GLA's address, no Reply-To, no link.
    subscribe(prod, "defaults@example.org")
    [mail] = smtp.outbox.wait_for(1)
    message, html, text = _parts(mail)
    assert DEFAULT_POSTAL_ADDRESS in html and DEFAULT_POSTAL_ADDRESS in text
    assert "Reply-To" not in message
    assert "Privacy notice" not in text


def test_the_console_preview_shows_the_footer(client, session, settings_env):
    settings_env(privacy_notice_url=PRIVACY)
    signed_in_client(client, session)
    update = make_update(session)
    answer = client.get(f"/admin/drafts/{update.id}/preview")
    assert answer.status_code == 200
    assert DEFAULT_POSTAL_ADDRESS in answer.text and f'href="{PRIVACY}"' in answer.text


HOSTILE = [
    ("reply_to", "team@london.gov.uk\r\nBcc: everyone@example.org", "MAILING_REPLY_TO"),
    ("reply_to", "not an address", "MAILING_REPLY_TO"),
    ("postal_address", "City Hall\nBcc: x", "MAILING_POSTAL_ADDRESS"),
    ("postal_address", "  ", "MAILING_POSTAL_ADDRESS"),
    ("privacy_notice_url", "javascript:alert(1)", "MAILING_PRIVACY_NOTICE_URL"),
    ("privacy_notice_url", "ftp://files.example.org/privacy", "MAILING_PRIVACY_NOTICE_URL"),
    ("privacy_notice_url", 'https://x.example/"onmouseover=1', "MAILING_PRIVACY_NOTICE_URL"),
    ("privacy_notice_url", "https://x.example/\r\nprivacy", "MAILING_PRIVACY_NOTICE_URL"),
]


@pytest.mark.parametrize(("field", "value", "name"), HOSTILE)
def test_a_hostile_footer_setting_is_refused(field, value, name):
    with pytest.raises(ConfigError, match=name):
        Settings(**{field: value}).check()


def test_good_footer_settings_pass():
    Settings(reply_to=REPLY_TO, privacy_notice_url=PRIVACY).check()
    Settings(reply_to="team@london.gov.uk", privacy_notice_url="http://localhost/p").check()


def test_a_command_refuses_to_start_with_a_hostile_reply_to(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAILING_")}
    env.update(
        MAILING_DATABASE_URL=f"sqlite:///{tmp_path}/x.db",
        MAILING_REPLY_TO="team@london.gov.uk\nBcc: everyone@example.org",
    )
    result = subprocess.run(
        [sys.executable, "-m", "mailing.cli", "migrate"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "MAILING_REPLY_TO must be one line" in result.stderr
    assert "Traceback" not in result.stderr
