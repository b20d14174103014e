"""Subscriber figures and the audit log, for every signed-in staff member."""

from __future__ import annotations

from fastapi.responses import Response

from mailing.figures import deliverability as deliverability
from mailing.figures import subscribers
from mailing.staff.audit import audit_entries
from mailing.states import StaffRole
from mailing.web.deps import SessionDep
from mailing.web.routes.console.common import Who, console_page, console_router

router = console_router()


@router.get("/figures")
def figures_page(who: Who, session: SessionDep) -> Response:
    # Read-only: today's figures are counted live; beat stores the snapshot hourly.
    history = subscribers.active_history(session, live_today=True)
    rates = deliverability.over_time(session)
    return console_page(
        "figures",
        who,
        counts=subscribers.counts_by_theme(session),
        history=history,
        chart=subscribers.chart(history),
        rates=rates,
        rate_charts=[
            (
                "Hard-bounce rate of each send",
                deliverability.rate_chart(rates, "bounce_rate", deliverability.BOUNCE_RATE_WARNING),
            ),
            (
                "Complaint rate of each send",
                deliverability.rate_chart(
                    rates, "complaint_rate", deliverability.COMPLAINT_RATE_WARNING
                ),
            ),
        ],
        nav="figures",
    )


@router.get("/audit")
def audit_page(who: Who, session: SessionDep) -> Response:
    return console_page(
        "audit",
        who,
        entries=audit_entries(session, show_addresses=who.staff.role == StaffRole.ADMIN),
        nav="audit",
    )
