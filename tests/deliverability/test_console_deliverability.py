"""Staff see deliverability in the console: each send's delivered, bounced, complained and
unsubscribed counts and rates, a warning on the send and on the dashboard when a send is over the
mailbox providers' limits (complaints over 0.1 %, hard bounces over 2 %), and the rates per send
on the figures page."""

from __future__ import annotations

from mailing.models import Delivery, utcnow
from mailing.states import DeliveryStatus
from tests.staff.test_console import add_subscribers, make_update, signed_in_client


def _sent_update(session, subject: str, bounced: int, complained: int, total: int = 100):
    ids = add_subscribers(session, total)
    update = make_update(session, "sent", subject=subject, recipients=total, sent_at=utcnow())
    statuses = (
        [DeliveryStatus.BOUNCED] * bounced
        + [DeliveryStatus.COMPLAINED] * complained
        + [DeliveryStatus.SENT] * (total - bounced - complained)
    )
    session.add_all(
        Delivery(update_id=update.id, subscriber_id=i, status=s, sent_at=utcnow())
        for i, s in zip(ids, statuses, strict=True)
    )
    session.commit()
    return update


def test_a_send_over_the_limits_is_flagged_on_its_page_the_dashboard_and_the_figures(
    client, session
):
    signed_in_client(client, session)
    bad = _sent_update(session, "Too many bounces", bounced=3, complained=1)
    good = _sent_update(session, "A clean send", bounced=1, complained=0)

    page = client.get(f"/admin/drafts/{bad.id}/progress").text
    assert "97</span> delivered" in page
    assert "3</span> bounced (3.00 %)" in page
    assert "1</span> complaints (1.00 %)" in page
    assert "complaint rate over 0.1 %" in page and "hard-bounce rate over 2 %" in page
    clean = client.get(f"/admin/drafts/{good.id}/progress").text
    assert "1</span> bounced (1.00 %)" in clean
    assert "over the mailbox providers" not in clean.lower()

    dashboard = client.get("/admin").text
    assert "Mailbox providers may start refusing our mail" in dashboard
    assert "Too many bounces" in dashboard.split("Mailbox providers")[1].split("</div>")[0]
    assert "A clean send" not in dashboard.split("Mailbox providers")[1].split("</div>")[0]

    figures = client.get("/admin/figures").text
    assert "Bounces and complaints per send" in figures
    assert "3.00 %" in figures and "over 2 %" in figures and "over 0.1 %" in figures
    # Drawn as well as tabled: a bar per send, red over the limit.
    assert "Hard-bounce rate of each send" in figures and "Complaint rate of each send" in figures
    assert f"{bad.subject}: 3.00 %" in figures and 'fill="#d4351c"' in figures


def test_no_warning_on_the_dashboard_when_every_send_is_clean(client, session):
    signed_in_client(client, session)
    _sent_update(session, "Fine", bounced=0, complained=0)
    assert "Mailbox providers may start refusing" not in client.get("/admin").text
