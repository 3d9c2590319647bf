"""Charts drawn on the server as inline SVG: no script, nothing to download, readable without
colour (points are labelled in the table next to each chart)."""

from __future__ import annotations

from decimal import Decimal

from markupsafe import Markup, escape

WIDTH, HEIGHT, PAD_X, PAD_Y = 640, 300, 70, 40


def _fmt(value: Decimal) -> str:
    return f"{value.normalize():f}"


def trend_svg(points: list[tuple[str, Decimal]], title: str, unit: str = "",
              low: Decimal | None = None, high: Decimal | None = None) -> Markup:
    """A line chart of (date, value) points, oldest first, with the normal range shaded.

    `title` names the chart for screen readers (role=img with a <title>); the same numbers
    are always given as a table beside it."""
    values = [v for _, v in points]
    bounds = values + [b for b in (low, high) if b is not None]
    top, bottom = max(bounds), min(bounds)
    span = (top - bottom) or Decimal(1)
    top, bottom = top + span / 10, bottom - span / 10
    span = top - bottom

    def x(i: int) -> float:
        if len(points) == 1:
            return WIDTH / 2
        return PAD_X + i * (WIDTH - 2 * PAD_X) / (len(points) - 1)

    def y(v: Decimal) -> float:
        return float(PAD_Y + (top - v) / span * (HEIGHT - 2 * PAD_Y))

    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {HEIGHT}" '
             f'class="chart" role="img" aria-labelledby="chart-title">',
             f'<title id="chart-title">{escape(title)}</title>',
             f'<rect x="0" y="0" width="{WIDTH}" height="{HEIGHT}" fill="#ffffff"/>']
    if low is not None and high is not None:
        parts.append(f'<rect x="{PAD_X}" y="{y(high):.1f}" width="{WIDTH - 2 * PAD_X}" '
                     f'height="{y(low) - y(high):.1f}" fill="#e3f1e6"/>')
    for bound in (b for b in (low, high) if b is not None):
        parts.append(f'<line x1="{PAD_X}" x2="{WIDTH - PAD_X}" y1="{y(bound):.1f}" '
                     f'y2="{y(bound):.1f}" stroke="#1d5b2b" stroke-dasharray="6 4"/>')
        parts.append(f'<text x="{PAD_X - 6}" y="{y(bound) + 5:.1f}" text-anchor="end" '
                     f'font-size="20" fill="#1b1b1b">{escape(_fmt(bound))}</text>')
    line = " ".join(f"{x(i):.1f},{y(v):.1f}" for i, (_, v) in enumerate(points))
    parts.append(f'<polyline points="{line}" fill="none" stroke="#0b4f8a" stroke-width="3"/>')
    for i, (when, value) in enumerate(points):
        out = (high is not None and value > high) or (low is not None and value < low)
        parts.append(f'<circle cx="{x(i):.1f}" cy="{y(value):.1f}" r="{9 if out else 7}" '
                     f'fill="{"#a4000f" if out else "#0b4f8a"}"/>')
        parts.append(f'<text x="{x(i):.1f}" y="{y(value) - 12:.1f}" text-anchor="middle" '
                     f'font-size="20" fill="#1b1b1b">{escape(_fmt(value))}</text>')
        parts.append(f'<text x="{x(i):.1f}" y="{HEIGHT - 6}" text-anchor="middle" '
                     f'font-size="18" fill="#1b1b1b">{escape(when)}</text>')
    if unit:
        parts.append(f'<text x="6" y="20" font-size="18" fill="#1b1b1b">{escape(unit)}</text>')
    parts.append("</svg>")
    return Markup("".join(parts))
