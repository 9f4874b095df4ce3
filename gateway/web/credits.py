"""The credits page: both balances (separate, never exchangeable), the ledger, a chart of
credits spent per day over the last 30 days, and the plan table from configuration."""
from __future__ import annotations

import datetime as dt
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response
from markupsafe import Markup
from sqlalchemy.orm import Session

from gateway.billing import ledger
from gateway.models import Account, utcnow
from gateway.web.charts import spend_chart_svg, spend_per_day
from gateway.web.i18n import locale_for
from gateway.web.render import render
from gateway.web.security import WebUser, context_of

router = APIRouter(include_in_schema=False)

CHART_DAYS = 30
LEDGER_ROWS = 50


@router.get("/credits")
async def credits_page(request: Request, user: WebUser) -> Response:
    ctx = context_of(request)
    now = utcnow()
    since = dt.datetime.combine(now.date() - dt.timedelta(days=CHART_DAYS - 1), dt.time())

    def read(session: Session) -> dict[str, Any]:
        account = session.get(Account, user.account_id)
        assert account is not None
        return {
            "account": account,
            "entries": ledger.history(session, account.id, LEDGER_ROWS),
            "captures": ledger.captured_since(session, account.id, since),
        }

    data = await ctx.db.run_async(read)
    _ = locale_for(request).gettext
    days = spend_per_day(data.pop("captures"), now.date(), CHART_DAYS)
    chart = spend_chart_svg(
        days, _("Credits spent per day, last 30 days"),
        {"api": _("API credits"), "app": _("App credits")},
    )
    settings = ctx.settings
    return render(
        request, "credits.html", user, title="Credits and plans",
        chart=Markup(chart),  # noqa: S704 - built by spend_chart_svg, every text escaped
        spent_total=sum(day.total for day in days),
        plans=settings.plans, prices=settings.price_per_second,
        min_billed_s=settings.min_billed_duration_s, **data,
    )
