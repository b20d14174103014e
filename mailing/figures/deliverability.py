"""Per-update deliverability figures for staff: bounces, complaints and unsubscribes among the
copies the relay took, their rates, and warnings past the big mailbox providers' limits.

Counts only, from the counts the database keeps of the delivery and subscriber rows
(figures/kept_counts.py: no join of deliveries to subscribers);
no personal data.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlmodel import Session, col

from mailing.figures import kept_counts
from mailing.models import Update
from mailing.states import DELIVERED, DeliveryStatus, UpdateStatus

# The 2024 bulk-sender rules keep spam complaints under 0.1 %; hard bounces over 2 % mark a list
# that needs cleaning.
COMPLAINT_RATE_WARNING = 0.001
BOUNCE_RATE_WARNING = 0.02


def for_update(session: Session, update_id: int) -> dict[str, Any]:
    """Counts and rates of one update's copies that went out (`DELIVERED` statuses)."""
    by_status = {
        s: n for s, n in kept_counts.deliveries_of(session, update_id).items() if s in DELIVERED
    }
    handed_over = sum(by_status.values())
    bounced = int(by_status.get(DeliveryStatus.BOUNCED, 0))
    complained = int(by_status.get(DeliveryStatus.COMPLAINED, 0))
    # Who left after this copy reached them (complainers are counted as complaints instead):
    # its `sent` copies whose subscriber is now unsubscribed, unsubscribed_at >= sent_at.
    unsubscribed = kept_counts.left_after(session, update_id)
    bounce_rate = bounced / handed_over if handed_over else 0.0
    complaint_rate = complained / handed_over if handed_over else 0.0
    warnings = warnings_for(bounce_rate, complaint_rate)
    return {
        "delivered": handed_over - bounced,
        "bounced": bounced,
        "complained": complained,
        "unsubscribed": int(unsubscribed),
        "bounce_rate": round(bounce_rate, 5),
        "complaint_rate": round(complaint_rate, 5),
        "deliverability_warnings": warnings,
    }


def warnings_for(bounce_rate: float, complaint_rate: float) -> list[str]:
    """What a send's rates are over (the mailbox providers' limits)."""
    warnings = []
    if complaint_rate > COMPLAINT_RATE_WARNING:
        warnings.append("complaint rate over 0.1 %")
    if bounce_rate > BOUNCE_RATE_WARNING:
        warnings.append("hard-bounce rate over 2 %")
    return warnings


def over_time(session: Session, limit: int = 52) -> list[dict[str, Any]]:
    """Bounce and complaint rates of the last `limit` sent updates, oldest first (for a chart)."""
    counts = kept_counts.DELIVERY_COUNT
    delivered = counts.c.status.in_([d.value for d in DELIVERED])

    def summed(status: DeliveryStatus | None = None) -> Any:
        which = delivered if status is None else counts.c.status == status.value
        return sa.func.sum(sa.case((which, counts.c.n), else_=0))

    # The kept counts: a few rows per update, however many deliveries it had.
    rows = session.execute(
        sa.select(
            col(Update.id),
            col(Update.sent_at),
            col(Update.subject),
            summed(),
            summed(DeliveryStatus.BOUNCED),
            summed(DeliveryStatus.COMPLAINED),
        )
        .join(counts, counts.c.update_id == Update.id)
        .where(col(Update.status) == UpdateStatus.SENT)
        .group_by(col(Update.id), col(Update.sent_at), col(Update.subject))
        .having(summed() > 0)
        .order_by(col(Update.sent_at).desc(), col(Update.id).desc())
        .limit(limit)
    ).all()
    return [
        {
            "update_id": update_id,
            "sent_at": sent_at.isoformat() if sent_at else None,
            "subject": subject,
            "bounce_rate": round(int(bounced or 0) / int(total), 5),
            "complaint_rate": round(int(complained or 0) / int(total), 5),
        }
        for update_id, sent_at, subject, total, bounced, complained in reversed(rows)
    ]


@dataclass(frozen=True)
class Bar:
    x: float
    y: float
    width: float
    height: float
    label: str  # e.g. "Healthy Minds in March: 0.40 %"
    over: bool  # over the warning threshold


@dataclass(frozen=True)
class RateChart:
    """Positions for a server-drawn SVG bar chart of one rate per send (the template draws it)."""

    width: int
    height: int
    bars: list[Bar]
    threshold_y: float
    threshold_label: str
    top_label: str


def rate_chart(
    rates: list[dict[str, Any]], key: str, threshold: float, width: int = 640, height: int = 160
) -> RateChart:
    left, top, bottom = 48, 12, 20
    plot_w, plot_h = width - left - 8, height - top - bottom
    peak = max([threshold * 2, *(float(r[key]) for r in rates)])
    slot = plot_w / max(1, len(rates))
    bars = []
    for i, r in enumerate(rates):
        value = float(r[key])
        h = plot_h * value / peak
        bars.append(
            Bar(
                x=left + i * slot + slot * 0.15,
                y=top + plot_h - h,
                width=max(1.0, slot * 0.7),
                height=h,
                label=f"{r['subject']}: {value * 100:.2f} %",
                over=value > threshold,
            )
        )
    return RateChart(
        width=width,
        height=height,
        bars=bars,
        threshold_y=top + plot_h - plot_h * threshold / peak,
        threshold_label=f"{threshold * 100:g} %",
        top_label=f"{peak * 100:.2g} %",
    )
