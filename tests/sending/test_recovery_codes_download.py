"""The recovery codes page (issue 26): a download as a .txt that works without JavaScript (the
page posts the codes back; only the member's own unspent codes are echoed, no-store), and copy
and print buttons from a script file (the CSP allows no inline script)."""

from __future__ import annotations

import re

from mailing.staff import factors
from tests.staff.test_console import csrf_of
from tests.staff.test_two_factor import _password_only, enrol_first_app, make_staff_lookup
from tests.support.staff import make_staff

DOWNLOAD = "/admin/account/recovery-codes/download"


def _enrol(client, session, email: str):
    make_staff(session, email)
    _password_only(client, email)
    done = enrol_first_app(client)
    assert done.status_code == 200
    return done, re.findall(r"<code>([a-z0-9]{5}-[a-z0-9]{5})</code>", done.text)


def test_the_codes_download_as_a_text_file_kept_nowhere(client, session):
    page, codes = _enrol(client, session, "keeper@gla.example")
    assert len(codes) == 10
    assert f'action="{DOWNLOAD}"' in page.text
    assert '<script src="/static/recovery-codes.js" defer></script>' in page.text
    assert "<script>" not in page.text
    posted = re.search(r'name="codes" value="([^"]+)"', page.text).group(1)
    answer = client.post(DOWNLOAD, data={"csrf_token": csrf_of(page.text), "codes": posted})
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("text/plain")
    assert answer.headers["content-disposition"] == 'attachment; filename="recovery-codes.txt"'
    assert answer.headers["cache-control"] == "no-store"
    assert answer.text.splitlines()[-10:] == codes


def test_only_the_members_own_unspent_codes_are_echoed(client, session):
    page, codes = _enrol(client, session, "careful@gla.example")
    csrf = csrf_of(page.text)
    for bad in ("", "<script>alert(1)</script>", "aaaaa-aaaaa", " ".join(codes * 2), "x" * 5000):
        answer = client.post(DOWNLOAD, data={"csrf_token": csrf, "codes": bad})
        assert answer.status_code == 422, bad[:20]
        assert "alert" not in answer.text
    staff = make_staff_lookup(session, "careful@gla.example")
    assert factors.use_recovery_code(session, staff, codes[0]) == 9
    spent = client.post(DOWNLOAD, data={"csrf_token": csrf, "codes": " ".join(codes)})
    assert spent.status_code == 422
    assert client.post(DOWNLOAD, data={"codes": " ".join(codes[1:])}).status_code == 403
    assert client.post(DOWNLOAD, data={"csrf_token": csrf, "codes": codes[1]}).status_code == 200


def test_the_copy_and_print_script_and_the_print_stylesheet_are_served(client):
    script = client.get("/static/recovery-codes.js")
    assert script.status_code == 200 and "navigator.clipboard" in script.text
    assert "window.print()" in script.text
    assert "@media print" in client.get("/static/console.css").text
