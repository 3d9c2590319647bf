"""Charts drawn on the server as inline SVG: no script, nothing to download, readable without
colour (points are labelled in the table next to each chart)."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

from markupsafe import Markup, escape

WIDTH, HEIGHT, PAD_X, PAD_Y = 640, 300, 70, 40


def when_of(label: str) -> dt.datetime | None:
    """The moment an ISO date or date-time label names (naive ones taken as UTC), or None."""
    try:
        at = dt.datetime.fromisoformat(label)
    except (TypeError, ValueError):
        return None
    return at if at.tzinfo else at.replace(tzinfo=dt.UTC)


def x_positions(labels: list[str]) -> list[float]:
    """Where each reading sits on the x axis: by its time when every label is an ISO date or
    date-time (so a gap of months looks like one), else evenly, in order."""
    count = len(labels)
    if count == 1:
        return [WIDTH / 2]
    times = [when_of(label) for label in labels]
    if all(times) and times[-1] > times[0]:
        first, span = times[0], (times[-1] - times[0]).total_seconds()
        return [PAD_X + (at - first).total_seconds() / span * (WIDTH - 2 * PAD_X)
                for at in times]
    return [PAD_X + i * (WIDTH - 2 * PAD_X) / (count - 1) for i in range(count)]


def _fmt(value: Decimal) -> str:
    return f"{value.normalize():f}"


def trend_svg(points: list[tuple[str, Decimal]], title: str, unit: str = "",
              low: Decimal | None = None, high: Decimal | None = None) -> Markup:
    """One test's (date, value) points, oldest first, with the normal range shaded and the
    points outside it marked: `series_svg` with one series and a band."""
    values = [v for _, v in points]
    flagged = [(high is not None and v > high) or (low is not None and v < low) for v in values]
    return series_svg([when for when, _ in points], [("", values)], title, unit, flagged,
                      band=(low, high))


#: How each series of `series_svg` is drawn, so they differ without colour too: line colour,
#: dash pattern, marker shape.
_SERIES_STYLES = (("#0b4f8a", "", "circle"), ("#5a2d82", "8 5", "square"))
LEGEND_X = 130


def _marker(shape: str, cx: float, cy: float, r: float, fill: str) -> str:
    if shape == "square":
        return (f'<rect x="{cx - r:.1f}" y="{cy - r:.1f}" width="{2 * r:.1f}" '
                f'height="{2 * r:.1f}" fill="{fill}"/>')
    return f'<circle cx="{cx:.1f}" cy="{cy:.1f}" r="{r:.1f}" fill="{fill}"/>'


def series_svg(labels: list[str], series: list[tuple[str, list[Decimal | None]]], title: str,
               unit: str = "", flagged: list[bool] | None = None,
               band: tuple[Decimal | None, Decimal | None] = (None, None)) -> Markup:
    """A line chart of one or two series over the same readings (oldest first), e.g. systolic
    and diastolic blood pressure. `labels[i]` names reading i on the x axis (an ISO date or
    date-time places it by time, `x_positions`); a series' value may be None (that reading has
    no such number). Flagged readings get a larger red marker. Each series has its own dash
    pattern and marker shape and, when named, a legend entry. `band` (low, high) draws a
    normal range: its bounds as dashed, labelled lines, shaded between when both are known.

    `title` names the chart for screen readers (role=img with a <title>); the same numbers
    are always given as a table beside it."""
    if not 1 <= len(series) <= len(_SERIES_STYLES):
        raise ValueError(f"one to {len(_SERIES_STYLES)} series")
    count = len(labels)
    flagged = flagged or [False] * count
    values = [v for _, vs in series for v in vs if v is not None]
    if not values:
        raise ValueError("nothing to draw")
    bounds = [b for b in band if b is not None]
    top, bottom = max(values + bounds), min(values + bounds)
    span = (top - bottom) or Decimal(1)
    top, bottom = top + span / 5, bottom - span / 10
    span = top - bottom
    legend = any(name for name, _ in series)
    pad_top = PAD_Y + (26 * len(series) if legend else 0)

    xs = x_positions(labels)

    def x(i: int) -> float:
        return xs[i]

    def y(v: Decimal) -> float:
        return float(pad_top + (top - v) / span * (HEIGHT - pad_top - PAD_Y))

    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {HEIGHT}" '
             f'class="chart" role="img" aria-labelledby="chart-title">',
             f'<title id="chart-title">{escape(title)}</title>',
             f'<rect x="0" y="0" width="{WIDTH}" height="{HEIGHT}" fill="#ffffff"/>']
    low, high = band
    if low is not None and high is not None:
        parts.append(f'<rect x="{PAD_X}" y="{y(high):.1f}" width="{WIDTH - 2 * PAD_X}" '
                     f'height="{y(low) - y(high):.1f}" fill="#e3f1e6"/>')
    for bound in bounds:
        parts.append(f'<line x1="{PAD_X}" x2="{WIDTH - PAD_X}" y1="{y(bound):.1f}" '
                     f'y2="{y(bound):.1f}" stroke="#1d5b2b" stroke-dasharray="6 4"/>')
        parts.append(f'<text x="{PAD_X - 6}" y="{y(bound) + 5:.1f}" text-anchor="end" '
                     f'font-size="18" fill="#1b1b1b">{escape(_fmt(bound))}</text>')
    write_values = count <= 12  # more would overlap; the table has every number
    every = max(1, (count + 3) // 4)  # at most four dates under the axis (room on a phone)
    for (_name, vs), (colour, dash, shape) in zip(series, _SERIES_STYLES, strict=False):
        line = " ".join(f"{x(i):.1f},{y(v):.1f}" for i, v in enumerate(vs) if v is not None)
        dashes = f' stroke-dasharray="{dash}"' if dash else ""
        parts.append(f'<polyline points="{line}" fill="none" stroke="{colour}" '
                     f'stroke-width="3"{dashes}/>')
        for i, v in enumerate(vs):
            if v is None:
                continue
            out = flagged[i]
            parts.append(_marker(shape, x(i), y(v), 9 if out else 7,
                                 "#a4000f" if out else colour))
            if write_values:
                parts.append(f'<text x="{x(i):.1f}" y="{y(v) - 12:.1f}" text-anchor="middle" '
                             f'font-size="18" fill="#1b1b1b">{escape(_fmt(v))}</text>')
    for i, label in enumerate(labels):
        if (count - 1 - i) % every == 0:  # the newest reading always named
            parts.append(f'<text x="{x(i):.1f}" y="{HEIGHT - 6}" text-anchor="middle" '
                         f'font-size="18" fill="#1b1b1b">{escape(label)}</text>')
    if legend:  # one entry a line, right of the unit: names may be long (and translated)
        for k, ((name, _), (colour, dash, shape)) in enumerate(
                zip(series, _SERIES_STYLES, strict=False)):
            ly = 22 + 26 * k
            dashes = f' stroke-dasharray="{dash}"' if dash else ""
            parts.append(f'<line x1="{LEGEND_X}" x2="{LEGEND_X + 40}" y1="{ly}" y2="{ly}" '
                         f'stroke="{colour}" stroke-width="3"{dashes}/>')
            parts.append(_marker(shape, LEGEND_X + 20, ly, 6, colour))
            parts.append(f'<text x="{LEGEND_X + 50}" y="{ly + 6}" font-size="18" '
                         f'fill="#1b1b1b">{escape(name)}</text>')
    if unit:
        parts.append(f'<text x="6" y="28" font-size="18" fill="#1b1b1b">{escape(unit)}</text>')
    parts.append("</svg>")
    return Markup("".join(parts))
