"""The staff console: HTML pages under /admin, signed in with email and password.

Paths here never collide with the JSON API (/admin/updates..., /admin/stats). Every POST needs
the session's CSRF token; roles are checked exactly as the API checks them.
"""

from __future__ import annotations

from mailing.web.routes.console import (
    drafts,
    factors,
    figures,
    guide,
    sending,
    signin,
    staff_admin,
)
from mailing.web.routes.console.common import console_router

# One flat router: each part's routes already carry the /admin prefix and the console's route
# class, so they are joined as they are (include_router would nest them as opaque branches).
router = console_router()
for _part in (signin, factors, drafts, sending, figures, staff_admin, guide):
    router.routes.extend(_part.router.routes)
