"""The credits chart: credits spent per day over the last days as a server-rendered SVG
(stacked bars, API credits and app credits), with a text title per bar for screen readers."""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from html import escape

WIDTH = 720
HEIGHT = 220
MARGIN_LEFT = 44
MARGIN_BOTTOM = 28
MARGIN_TOP = 26
COLORS = {"api": "#2457c5", "app": "#e08a00"}


@dataclass(frozen=True)
class DaySpend:
    day: dt.date
    api: int
    app: int

    @property
    def total(self) -> int:
        return self.api + self.app


def spend_per_day(
    captures: list[tuple[dt.datetime, str, int]], today: dt.date, days: int
) -> list[DaySpend]:
    """One entry per calendar day (UTC), oldest first, days without spending included."""
    first = today - dt.timedelta(days=days - 1)
    totals = {first + dt.timedelta(days=i): {"api": 0, "app": 0} for i in range(days)}
    for created_at, credit_kind, credits in captures:
        bucket = totals.get(created_at.date())
        if bucket is not None and credit_kind in bucket:
            bucket[credit_kind] += credits
    return [DaySpend(day, spent["api"], spent["app"]) for day, spent in totals.items()]


def _nice_ceiling(value: int) -> int:
    # Even steps, so the middle grid line is a whole number too.
    for step in (4, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000):
        if value <= step:
            return step
    return value


def spend_chart_svg(days: list[DaySpend], label: str, legend: dict[str, str]) -> str:
    """Stacked bars: one per day, API credits below app credits."""
    top = _nice_ceiling(max((d.total for d in days), default=0))
    plot_w = WIDTH - MARGIN_LEFT - 8
    plot_h = HEIGHT - MARGIN_TOP - MARGIN_BOTTOM
    slot = plot_w / max(len(days), 1)
    bar_w = max(slot * 0.7, 1.0)
    parts = [
        f'<svg class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" aria-label="{escape(label)}"'
        ' xmlns="http://www.w3.org/2000/svg" direction="ltr">',
        f"<title>{escape(label)}</title>",
    ]
    for fraction in (0.0, 0.5, 1.0):
        y = MARGIN_TOP + plot_h * (1 - fraction)
        parts.append(f'<line x1="{MARGIN_LEFT}" x2="{WIDTH - 8}" y1="{y:.1f}" y2="{y:.1f}" stroke="#d8dce2"/>')
        parts.append(f'<text x="{MARGIN_LEFT - 6}" y="{y + 4:.1f}" text-anchor="end" font-size="11" fill="#5a6370">{top * fraction:g}</text>')
    for index, day in enumerate(days):
        x = MARGIN_LEFT + index * slot + (slot - bar_w) / 2
        base = MARGIN_TOP + plot_h
        for kind in ("api", "app"):
            credits = getattr(day, kind)
            if credits <= 0:
                continue
            height = plot_h * credits / top
            base -= height
            parts.append(
                f'<rect x="{x:.1f}" y="{base:.1f}" width="{bar_w:.1f}" height="{height:.1f}" fill="{COLORS[kind]}">'
                f"<title>{day.day.isoformat()}: {credits} {escape(legend[kind])}</title></rect>"
            )
        if index % 5 == 0 or index == len(days) - 1:
            parts.append(f'<text x="{x + bar_w / 2:.1f}" y="{HEIGHT - 8}" text-anchor="middle" font-size="11" fill="#5a6370">{day.day.strftime("%m-%d")}</text>')
    legend_x = MARGIN_LEFT
    for kind in ("api", "app"):
        parts.append(f'<rect x="{legend_x}" y="4" width="10" height="10" fill="{COLORS[kind]}"/>')
        parts.append(f'<text x="{legend_x + 14}" y="13" font-size="11" fill="#1b1f24">{escape(legend[kind])}</text>')
        legend_x += 24 + 7 * len(legend[kind])
    parts.append("</svg>")
    return "".join(parts)
