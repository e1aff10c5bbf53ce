"""Server-side inline SVG charts for the console page: no JavaScript, nothing from the network.

:func:`line_chart` draws values over time (one line per series, gaps where a value is NaN or
infinite); :func:`bar_chart` draws labelled horizontal bars, largest first. Both return a
``<figure>`` whose ``<svg>`` is labelled by its own ``<title>`` and ``<desc>`` for screen
readers, coloured by CSS classes (``series-0`` .. ``series-7``, ``threshold``, ``over``,
``axis``, ``grid``, ``legend``) with Okabe-Ito defaults so it reads without the stylesheet too.
Every piece of text is escaped; the output is deterministic.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from html import escape

__all__ = ["Series", "bar_chart", "line_chart"]

# Okabe-Ito, reordered so the first few series (the common case) get the most distinct colours;
# its yellow and black are last: the weakest on a white or a dark page.
PALETTE: tuple[str, ...] = (
    "#0072B2",
    "#E69F00",
    "#009E73",
    "#D55E00",
    "#CC79A7",
    "#56B4E9",
    "#F0E442",
    "#000000",
)
_BAR_FILL = "#0072B2"
_OVER_FILL = "#D55E00"
NO_DATA = "no data yet"

_FONT_SIZE = 11
_CHAR_W = 6.2  # mean advance of an 11px sans-serif glyph: text can't be measured server-side
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
_TWO_DAYS = 2 * 86400.0
# fmt: off
_TIME_STEPS: tuple[float, ...] = (
    1, 2, 5, 10, 15, 30,
    60, 120, 300, 600, 900, 1800,
    3600, 7200, 10800, 21600, 43200,
    86400, 2 * 86400, 7 * 86400, 14 * 86400, 28 * 86400, 56 * 86400, 91 * 86400,
    182 * 86400, 364 * 86400,
)
# fmt: on
# Characters XML 1.0 forbids even as references: one stray byte in a label would break the page.
_XML_INVALID = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")


@dataclass(frozen=True)
class Series:
    """One line of a :func:`line_chart`: ``points`` are (unix seconds, value), sorted by time;
    a NaN or infinite value is a gap."""

    label: str
    points: list[tuple[float, float]]


def _esc(text: str) -> str:
    return escape(_XML_INVALID.sub("", text), quote=True)


def _n(v: float) -> str:
    """A coordinate: one decimal is finer than a pixel and keeps the markup small."""
    s = f"{v:.1f}"
    return "0" if s == "-0.0" else s.removesuffix(".0")


def _compact(v: float, sig: int = 3) -> str:
    """``v`` to ``sig`` significant digits: 0.812, 12.5k, 3.1e-05."""
    if math.isnan(v):
        return "n/a"
    if math.isinf(v):
        return "∞" if v > 0 else "-∞"
    if v == 0:
        return "0"
    # Round first so 999.7 becomes 1k rather than "1e+03".
    r = float(f"{v:.{sig}g}")
    for div, suffix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(r) >= div and abs(r) < 1e15:
            return f"{r / div:.{sig}g}{suffix}"
    return f"{r:.{sig}g}"


def _with_unit(text: str, unit: str) -> str:
    if not unit:
        return text
    return f"{text}{unit}" if unit.startswith("%") else f"{text} {unit}"


def _ids(title: str) -> tuple[str, str]:
    slug = re.sub(r"[^a-z0-9]+", "-", title.lower()).strip("-")[:40].strip("-") or "chart"
    digest = hashlib.sha1(title.encode("utf-8"), usedforsecurity=False).hexdigest()[:8]
    base = f"chart-{slug}-{digest}"
    return f"{base}-title", f"{base}-desc"


def _truncate(text: str, max_chars: int) -> str:
    max_chars = max(max_chars, 2)
    return text if len(text) <= max_chars else text[: max_chars - 1] + "…"


def _text_w(text: str) -> float:
    return len(text) * _CHAR_W


def _empty(title: str, kind: str) -> str:
    return (
        f'<figure class="chart chart-{kind} chart-empty">'
        f"<figcaption>{_esc(title)}: {NO_DATA}</figcaption></figure>"
    )


def _open_svg(width: float, height: float, title: str, desc: str) -> list[str]:
    title_id, desc_id = _ids(title)
    return [
        f'<svg class="chart-svg" width="{_n(width)}" height="{_n(height)}" '
        f'viewBox="0 0 {_n(width)} {_n(height)}" role="img" '
        f'aria-labelledby="{title_id} {desc_id}" font-family="sans-serif" '
        f'font-size="{_FONT_SIZE}">',
        f'<title id="{title_id}">{_esc(title)}</title>',
        f'<desc id="{desc_id}">{_esc(desc)}</desc>',
    ]


def _figure(kind: str, svg: list[str], caption: str) -> str:
    return (
        f'<figure class="chart chart-{kind}">'
        + "".join(svg)
        + f"<figcaption>{_esc(caption)}</figcaption></figure>"
    )


def _caption(title: str, unit: str) -> str:
    return f"{title} ({unit})" if unit else title


# --- value axis -------------------------------------------------------------------------------


def _value_ticks(lo: float, hi: float, max_ticks: int = 5) -> tuple[list[float], float]:
    """Round-number ticks inside [lo, hi]: the finest 1/2/2.5/5 step giving at most
    ``max_ticks``; the step before it gave more, so this one gives at least 3 (for 5)."""
    span = hi - lo
    e0 = math.floor(math.log10(span)) - 1
    for e in range(e0, e0 + 4):
        for m in (1.0, 2.0, 2.5, 5.0):
            step = m * 10.0**e
            first = math.ceil(lo / step - 1e-9)
            last = math.floor(hi / step + 1e-9)
            if last - first + 1 <= max_ticks:
                return [k * step for k in range(first, last + 1)], step
    return [lo, hi], span  # unreachable: the last step exceeds the span


def _tick_sig(ticks: list[float], step: float) -> int:
    """Significant digits that tell neighbouring ticks apart (102.5, not 102)."""
    biggest = max((abs(t) for t in ticks), default=0.0)
    if biggest == 0:
        return 1
    mantissa = step / 10.0 ** math.floor(math.log10(step))
    extra = 1 if abs(mantissa - 2.5) < 1e-9 else 0
    digits = math.floor(math.log10(biggest)) - math.floor(math.log10(step)) + 1 + extra
    return max(1, min(6, digits))


def _pad(v: float) -> float:
    return max(abs(v) * 0.1, 1e-9 if v != 0 else 1.0)


def _value_range(
    values: Iterable[float], y_min: float | None, y_max: float | None, threshold: float | None
) -> tuple[float, float]:
    data = [v for v in values if math.isfinite(v)]
    if threshold is not None and math.isfinite(threshold):
        data.append(threshold)
    lo = y_min if y_min is not None else min(data)
    hi = y_max if y_max is not None else max(data)
    if y_min is None and y_max is None:
        if hi == lo:
            lo, hi = lo - _pad(lo), hi + _pad(hi)
        else:
            margin = (hi - lo) * 0.05
            # A rate of 0..1 shouldn't grow a negative axis just for breathing room.
            lo = max(lo - margin, 0.0) if min(data) >= 0 else lo - margin
            hi = hi + margin
    elif hi <= lo:
        # One clamp given and every value on its wrong side: keep the clamp, open the other end.
        if y_min is not None:
            hi = lo + _pad(lo)
        else:
            lo = hi - _pad(hi)
    return lo, hi


# --- time axis --------------------------------------------------------------------------------


def _utc(t: float) -> datetime:
    return datetime.fromtimestamp(t, tz=UTC)


def _time_label(t: float, step: float, span: float) -> str:
    d = _utc(t)
    if span > _TWO_DAYS:
        if step >= 28 * 86400:
            return f"{_MONTHS[d.month - 1]} {d.year}"
        return f"{d.day} {_MONTHS[d.month - 1]}"
    return d.strftime("%H:%M:%S" if step < 60 else "%H:%M")


def _time_ticks(t0: float, t1: float, max_ticks: int) -> list[tuple[float, str]]:
    span = t1 - t0
    steps = list(_TIME_STEPS)
    # Past a year or so: whole multiples of a year-ish step, whatever the span.
    steps.append(364 * 86400 * math.ceil(span / (max_ticks * 364 * 86400)))
    for step in steps:
        first = math.ceil(t0 / step)
        last = math.floor(t1 / step)
        if last - first + 1 <= max_ticks:
            return [(k * step, _time_label(k * step, step, span)) for k in range(first, last + 1)]
    return []


def _stamp(t: float) -> str:
    return _utc(t).strftime("%Y-%m-%d %H:%M UTC")


# --- charts -----------------------------------------------------------------------------------


def _clean(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """Points with a usable time, in time order (non-finite values kept: they are the gaps)."""
    return sorted(((float(t), float(v)) for t, v in points if math.isfinite(t)), key=lambda p: p[0])


def _runs(points: list[tuple[float, float]]) -> list[list[tuple[float, float]]]:
    runs: list[list[tuple[float, float]]] = [[]]
    for t, v in points:
        if math.isfinite(v):
            runs[-1].append((t, v))
        elif runs[-1]:
            runs.append([])
    return [r for r in runs if r]


def _legend(series: list[Series], left: float, right: float, top: float) -> tuple[list[str], float]:
    """Legend items laid out in rows across the top; returns the markup and its height."""
    row_h = 14.0
    parts = ['<g class="legend" fill="currentColor">']
    x, y = left, top
    for i, s in enumerate(series):
        shown = _truncate(s.label, 28)
        item_w = 18 + _text_w(shown) + 12
        if x > left and x + item_w > right:
            x, y = left, y + row_h
        cls = f"series-{i % len(PALETTE)}"
        parts.append(
            f'<line class="{cls}" x1="{_n(x)}" y1="{_n(y + 7)}" x2="{_n(x + 14)}" '
            f'y2="{_n(y + 7)}" stroke="{PALETTE[i % len(PALETTE)]}" stroke-width="2"/>'
            f'<text x="{_n(x + 18)}" y="{_n(y + 7)}" dy="0.32em">'
            + (f"<title>{_esc(s.label)}</title>" if shown != s.label else "")
            + f"{_esc(shown)}</text>"
        )
        x += item_w
    parts.append("</g>")
    return parts, (y - top) + row_h


def line_chart(
    title: str,
    series: list[Series],
    *,
    unit: str = "",
    y_min: float | None = None,
    y_max: float | None = None,
    threshold: float | None = None,
    width: int = 560,
    height: int = 180,
) -> str:
    """An accessible ``<figure>`` with an inline ``<svg>`` line chart (one polyline per series,
    gaps at NaN), time on x (HH:MM labels in UTC, or dates when the span exceeds 2 days), values
    on y with 3-5 tick labels, an optional dashed threshold line, a legend, and a
    ``<figcaption>``. The svg has role="img", aria-labelledby pointing at a ``<title>`` and
    ``<desc>``; the ``<desc>`` states each series' latest value. With no points at all it
    returns a ``<figure>`` whose caption says "no data yet" (no svg)."""
    y_min = y_min if y_min is not None and math.isfinite(y_min) else None
    y_max = y_max if y_max is not None and math.isfinite(y_max) else None
    if y_min is not None and y_max is not None and y_max <= y_min:
        raise ValueError(f"y_max ({y_max}) must be above y_min ({y_min})")
    if threshold is not None and not math.isfinite(threshold):
        threshold = None
    cleaned = [_clean(s.points) for s in series]
    finite = [(t, v) for pts in cleaned for t, v in pts if math.isfinite(v)]
    if not finite:
        return _empty(title, "line")

    times = [t for pts in cleaned for t, _ in pts]
    t0, t1 = min(times), max(times)
    if t1 == t0:  # one instant: centre it in an hour so the axis still reads as time
        t0, t1 = t0 - 1800, t1 + 1800
    lo, hi = _value_range((v for _, v in finite), y_min, y_max, threshold)
    yticks, ystep = _value_ticks(lo, hi)
    sig = _tick_sig(yticks, ystep)
    ylabels = [_compact(v, sig) for v in yticks]

    # The desc is what a screen reader hears instead of the picture: the latest value per series.
    facts: list[str] = []
    for s, pts in zip(series, cleaned, strict=True):
        last = next(((t, v) for t, v in reversed(pts) if math.isfinite(v)), None)
        if last is None:
            facts.append(f"{s.label}: no data")
        else:
            value = _with_unit(_compact(last[1]), unit)
            facts.append(f"{s.label}: latest {value} at {_stamp(last[0])}")
    desc = f"{title}. " + "; ".join(facts) + "."
    if threshold is not None:
        desc += f" Threshold {_with_unit(_compact(threshold), unit)}."

    left = max(28.0, max(_text_w(label) for label in ylabels) + 10)
    right = width - 16.0
    legend, legend_h = _legend(series, left, right, 4.0)
    top = 4.0 + legend_h + 8
    bottom = height - 20.0
    if bottom - top < 20:  # a legend too tall for the box: grow the box, don't squash the plot
        bottom = top + 20
    total_h = bottom + 20

    def x_of(t: float) -> float:
        return left + (t - t0) / (t1 - t0) * (right - left)

    def y_of(v: float) -> float:
        v = min(max(v, lo), hi)  # clamped axis: pin outliers to the edge, don't draw off-chart
        return bottom - (v - lo) / (hi - lo) * (bottom - top)

    svg = _open_svg(width, total_h, title, desc)
    svg.append('<g class="grid" stroke="currentColor" stroke-opacity="0.15">')
    svg += [
        f'<line x1="{_n(left)}" y1="{_n(y_of(v))}" x2="{_n(right)}" y2="{_n(y_of(v))}"/>'
        for v in yticks
    ]
    svg.append("</g>")

    svg.append('<g class="axis" fill="currentColor">')
    svg.append(
        f'<line x1="{_n(left)}" y1="{_n(bottom)}" x2="{_n(right)}" y2="{_n(bottom)}" '
        f'stroke="currentColor" stroke-opacity="0.5"/>'
    )
    svg += [
        f'<text x="{_n(left - 4)}" y="{_n(y_of(v))}" dy="0.32em" text-anchor="end">'
        f"{_esc(label)}</text>"
        for v, label in zip(yticks, ylabels, strict=True)
    ]
    max_xticks = max(2, min(5, int((right - left) // 70)))
    for t, label in _time_ticks(t0, t1, max_xticks):
        half = _text_w(label) / 2
        # Keep edge labels inside the box rather than cut off by the svg's border.
        x = min(max(x_of(t), half + 2), width - half - 2)
        svg.append(
            f'<text x="{_n(x)}" y="{_n(bottom + 14)}" text-anchor="middle">{_esc(label)}</text>'
        )
    svg.append("</g>")

    if threshold is not None and lo <= threshold <= hi:
        ty = y_of(threshold)
        svg.append(
            f'<g class="threshold"><line x1="{_n(left)}" y1="{_n(ty)}" x2="{_n(right)}" '
            f'y2="{_n(ty)}" stroke="currentColor" stroke-width="1" stroke-dasharray="4 3"/>'
            f'<text x="{_n(right)}" y="{_n(ty - 3)}" text-anchor="end" fill="currentColor">'
            f"{_esc(_with_unit(_compact(threshold), unit))}</text></g>"
        )

    for i, pts in enumerate(cleaned):
        colour = PALETTE[i % len(PALETTE)]
        svg.append(
            f'<g class="series series-{i % len(PALETTE)}" stroke="{colour}" stroke-width="2" '
            'fill="none" stroke-linejoin="round" stroke-linecap="round">'
        )
        for run in _runs(pts):
            if len(run) == 1:  # a lone point between gaps would be an invisible line
                t, v = run[0]
                svg.append(f'<circle cx="{_n(x_of(t))}" cy="{_n(y_of(v))}" r="2.5"/>')
            else:
                coords = " ".join(f"{_n(x_of(t))},{_n(y_of(v))}" for t, v in run)
                svg.append(f'<polyline points="{coords}"/>')
        svg.append("</g>")

    svg += legend
    svg.append("</svg>")
    return _figure("line", svg, _caption(title, unit))


def bar_chart(
    title: str,
    bars: list[tuple[str, float]],
    *,
    unit: str = "",
    threshold: float | None = None,
    width: int = 560,
    bar_height: int = 18,
) -> str:
    """Horizontal bars (label, value), largest first, value printed at the end of each bar;
    bars above ``threshold`` get class "over" (the threshold drawn as a dashed line), with the
    same accessibility as :func:`line_chart`. Empty -> figure with "no data yet"."""
    if not bars:
        return _empty(title, "bar")
    if threshold is not None and not math.isfinite(threshold):
        threshold = None
    # Largest first; bars without a usable value go last, in the order given.
    ordered = sorted(
        ((label, float(v)) for label, v in bars),
        key=lambda b: (0, -b[1]) if math.isfinite(b[1]) else (1, 0.0),
    )
    values = [v for _, v in ordered if math.isfinite(v)]
    marks = [*values, *([threshold] if threshold is not None else [])]
    vmin, vmax = min([0.0, *marks]), max([0.0, *marks])
    if vmax == vmin:
        vmax = 1.0

    def over(v: float) -> bool:
        return threshold is not None and math.isfinite(v) and v > threshold

    texts = [_with_unit(_compact(v), unit) for _, v in ordered]
    listed = [f"{label} {text}" for (label, _), text in zip(ordered, texts, strict=True)]
    desc = f"{title}. {len(ordered)} bars, largest first: " + ", ".join(listed[:20])
    if len(listed) > 20:
        desc += f", and {len(listed) - 20} more"
    desc += "."
    if threshold is not None:
        above = [label for label, v in ordered if over(v)]
        desc += f" Threshold {_with_unit(_compact(threshold), unit)}: "
        desc += f"{len(above)} above ({', '.join(above)})." if above else "none above."

    label_w = min(max(40.0, max(_text_w(_truncate(lb, 32)) for lb, _ in ordered) + 10), width * 0.4)
    value_w = max(_text_w(t) for t in texts) + 8
    left, right = label_w, width - value_w
    if vmin < 0:  # a negative bar prints its value off its left end
        left += value_w
    gap = 6.0
    top = 4.0
    rows_h = len(ordered) * (bar_height + gap)
    bottom = top + rows_h
    total_h = bottom + (18.0 if threshold is not None else 4.0)

    def x_of(v: float) -> float:
        return left + (v - vmin) / (vmax - vmin) * (right - left)

    svg = _open_svg(width, total_h, title, desc)
    zero = x_of(0.0)
    svg.append(
        f'<g class="axis"><line x1="{_n(zero)}" y1="{_n(top)}" x2="{_n(zero)}" '
        f'y2="{_n(bottom)}" stroke="currentColor" stroke-opacity="0.5"/></g>'
    )
    svg.append('<g class="bars" fill="currentColor">')
    max_label_chars = int((label_w - 10) // _CHAR_W)
    for i, ((label, v), text) in enumerate(zip(ordered, texts, strict=True)):
        y = top + i * (bar_height + gap)
        mid = y + bar_height / 2
        shown = _truncate(label, max_label_chars)
        svg.append(f"<g><title>{_esc(f'{label}: {text}')}</title>")
        svg.append(
            f'<text x="{_n(label_w - 6)}" y="{_n(mid)}" dy="0.32em" text-anchor="end">'
            f"{_esc(shown)}</text>"
        )
        if math.isfinite(v):
            end = x_of(v)
            cls, fill = ("bar over", _OVER_FILL) if over(v) else ("bar", _BAR_FILL)
            svg.append(
                f'<rect class="{cls}" x="{_n(min(zero, end))}" y="{_n(y)}" '
                f'width="{_n(abs(end - zero))}" height="{_n(bar_height)}" fill="{fill}"/>'
            )
        else:
            end = zero
        anchor, tx = ("end", end - 4) if math.isfinite(v) and v < 0 else ("start", end + 4)
        svg.append(
            f'<text class="value" x="{_n(tx)}" y="{_n(mid)}" dy="0.32em" '
            f'text-anchor="{anchor}">{_esc(text)}</text></g>'
        )
    svg.append("</g>")

    if threshold is not None:
        tx = x_of(threshold)
        svg.append(
            f'<g class="threshold"><line x1="{_n(tx)}" y1="{_n(top - 2)}" x2="{_n(tx)}" '
            f'y2="{_n(bottom)}" stroke="currentColor" stroke-width="1" stroke-dasharray="4 3"/>'
            f'<text x="{_n(tx)}" y="{_n(bottom + 12)}" text-anchor="middle" '
            f'fill="currentColor">{_esc(_with_unit(_compact(threshold), unit))}</text></g>'
        )
    svg.append("</svg>")
    return _figure("bar", svg, _caption(title, unit))
