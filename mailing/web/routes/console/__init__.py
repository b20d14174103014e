"""The staff console: HTML pages under /admin, signed in with email and password.

Paths here never collide with the JSON API (/admin/updates..., /admin/stats). Every POST needs
the session's CSRF token; roles are checked exactly as the API checks them.
"""

from __future__ import annotations

from mailing.web.routes.console import (
    desk_page,
    drafts,
    factors,
    figures,
    guide,
    import_page,
    review,
    sending,
    signin,
    sso,
    staff_admin,
    suppressions,
    welcome,
)
from mailing.web.routes.console.common import console_router

# One flat router: each part's routes already carry the /admin prefix and the console's route
# class, so they are joined as they are (include_router would nest them as opaque branches).
router = console_router()
for _part in (
    signin,
    sso,
    factors,
    drafts,
    review,
    sending,
    figures,
    staff_admin,
    welcome,
    desk_page,
    import_page,
    suppressions,
    guide,
):
    router.routes.extend(_part.router.routes)
