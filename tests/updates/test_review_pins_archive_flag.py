"""What a sender reviewed includes whether the update goes into the public archive: an editor
cannot make an internal update public (or the reverse) after the review, and the send
confirmation page says which it is. Production defaults."""

from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient

from tests.staff.test_console import csrf_of, fingerprint_of, sign_in
from tests.support.helpers import count
from tests.support.sending import add_subscribers, update_row
from tests.support.sending import api_staff as make_staff
from tests.support.staff import make_staff as console_staff

DRAFT = {"subject": "Staff notes", "body": "Internal.", "themes": ["healthy-places"]}


def test_making_an_internal_update_public_after_review_is_409_and_sends_nothing(
    prod: TestClient,
) -> None:
    add_subscribers(2, ["healthy-places"], prefix="pinflag")
    editor = {"Authorization": f"Bearer {make_staff('editor', 'ed@staff.example.org')}"}
    sender = {"Authorization": f"Bearer {make_staff('sender', 'se@staff.example.org')}"}
    made = prod.post("/admin/updates", json={**DRAFT, "published": False}, headers=editor)
    assert made.status_code == 201, made.text
    update_id = made.json()["id"]
    reviewed = prod.get(f"/admin/updates/{update_id}", headers=sender).json()["fingerprint"]
    made_public = prod.patch(
        f"/admin/updates/{update_id}", json={"published": True}, headers=editor
    )
    assert made_public.status_code == 200, made_public.text
    stale = prod.post(
        f"/admin/updates/{update_id}/send", json={"fingerprint": reviewed}, headers=sender
    )
    assert stale.status_code == 409, stale.text
    assert update_row(update_id).status.value == "draft"
    assert count("delivery") == 0


def test_the_send_confirmation_page_shows_the_archive_flag_and_pins_it(
    prod: TestClient, session: Any
) -> None:
    add_subscribers(1, ["healthy-places"], prefix="pinpage")
    console_staff(session, "sender@gla.example", "sender")
    assert sign_in(prod, "sender@gla.example").status_code == 303
    editor = {"Authorization": f"Bearer {make_staff('editor', 'ed2@staff.example.org')}"}
    update_id = prod.post(
        "/admin/updates", json={**DRAFT, "published": False}, headers=editor
    ).json()["id"]
    page = prod.get(f"/admin/drafts/{update_id}/send")
    assert page.status_code == 200
    assert "Not published: internal" in page.text
    reviewed = fingerprint_of(page.text)
    prod.patch(f"/admin/updates/{update_id}", json={"published": True}, headers=editor)
    assert "Published in the public archive" in prod.get(f"/admin/drafts/{update_id}/send").text
    answer = prod.post(
        f"/admin/drafts/{update_id}/send",
        data={"csrf_token": csrf_of(page.text), "fingerprint": reviewed},
        follow_redirects=False,
    )
    assert answer.status_code == 409
    assert count("delivery") == 0
