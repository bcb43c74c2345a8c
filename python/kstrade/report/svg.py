"""Small inline SVG charts for the run report: no plotting library, no JavaScript, one file.

Each function returns an `<svg>` element as text; axes are labelled with the data's own range.
"""

from __future__ import annotations

import html
from collections.abc import Sequence

WIDTH, HEIGHT, PAD = 640, 220, 40


def _scale(lo: float, hi: float, size: float, flip: bool) -> tuple[float, float]:
    span = (hi - lo) or 1.0
    k = (size - 2 * PAD) / span
    return (-k, size - PAD + lo * k) if flip else (k, PAD - lo * k)


def _frame(title: str, body: str, y_lo: float, y_hi: float, x_label: str, fmt: str = "{:,.2f}") -> str:
    t = html.escape(title)
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" role="img" aria-label="{t}">'
        f'<rect width="100%" height="100%" fill="#fff"/>'
        f'<text x="{PAD}" y="16" font-size="13" font-family="sans-serif">{t}</text>'
        f'<line x1="{PAD}" y1="{HEIGHT - PAD}" x2="{WIDTH - PAD}" y2="{HEIGHT - PAD}" stroke="#999"/>'
        f'<line x1="{PAD}" y1="{PAD}" x2="{PAD}" y2="{HEIGHT - PAD}" stroke="#999"/>'
        f'<text x="2" y="{PAD + 4}" font-size="10" font-family="sans-serif">{fmt.format(y_hi)}</text>'
        f'<text x="2" y="{HEIGHT - PAD}" font-size="10" font-family="sans-serif">{fmt.format(y_lo)}</text>'
        f'<text x="{WIDTH - PAD}" y="{HEIGHT - 8}" font-size="10" font-family="sans-serif" '
        f'text-anchor="end">{html.escape(x_label)}</text>'
        f"{body}</svg>"
    )


def line_chart(title: str, ys: Sequence[float], x_label: str = "", color: str = "#1f6feb") -> str:
    if len(ys) < 2:
        return _frame(title, '<text x="50%" y="50%" font-size="12">not enough data</text>', 0, 0, x_label)
    lo, hi = min(ys), max(ys)
    ky, by = _scale(lo, hi, HEIGHT, flip=True)
    kx = (WIDTH - 2 * PAD) / (len(ys) - 1)
    points = " ".join(f"{PAD + i * kx:.1f},{by + y * ky:.1f}" for i, y in enumerate(ys))
    return _frame(
        title, f'<polyline fill="none" stroke="{color}" stroke-width="1.5" points="{points}"/>', lo, hi, x_label
    )


def bar_chart(title: str, labels: Sequence[str], series: dict[str, Sequence[float]], y_max: float | None = None) -> str:
    """Grouped bars: one group per label, one bar per series."""
    colors = ["#1f6feb", "#d29922", "#3fb950", "#f85149"]
    values = [v for s in series.values() for v in s]
    hi = y_max if y_max is not None else (max(values) if values else 1.0)
    ky, by = _scale(0.0, hi, HEIGHT, flip=True)
    group = (WIDTH - 2 * PAD) / max(1, len(labels))
    bar = group / (len(series) + 1)
    body = []
    for gi, label in enumerate(labels):
        x0 = PAD + gi * group
        for si, (name, vals) in enumerate(series.items()):
            v = vals[gi]
            top = by + v * ky
            body.append(
                f'<rect x="{x0 + (si + 0.5) * bar:.1f}" y="{top:.1f}" width="{bar * 0.9:.1f}" '
                f'height="{HEIGHT - PAD - top:.1f}" fill="{colors[si % len(colors)]}"><title>{html.escape(name)} '
                f"{html.escape(label)}: {v:.3f}</title></rect>"
            )
        body.append(
            f'<text x="{x0 + group / 2:.1f}" y="{HEIGHT - PAD + 14}" font-size="11" text-anchor="middle" '
            f'font-family="sans-serif">{html.escape(label)}</text>'
        )
    for si, name in enumerate(series):  # the legend: one row under the title
        body.append(
            f'<text x="{PAD + 140 * si}" y="32" font-size="11" font-family="sans-serif" '
            f'fill="{colors[si % len(colors)]}">{html.escape(name)}</text>'
        )
    return _frame(title, "".join(body), 0.0, hi, "")


def histogram(title: str, values: Sequence[float], bins: int = 30, x_label: str = "") -> str:
    if not values:
        return _frame(title, '<text x="50%" y="50%" font-size="12">no data</text>', 0, 0, x_label)
    lo, hi = min(values), max(values)
    width = (hi - lo) / bins or 1.0
    counts = [0] * bins
    for v in values:
        counts[min(bins - 1, int((v - lo) / width))] += 1
    ky, by = _scale(0.0, float(max(counts)), HEIGHT, flip=True)
    bw = (WIDTH - 2 * PAD) / bins
    body = "".join(
        f'<rect x="{PAD + i * bw:.1f}" y="{by + c * ky:.1f}" width="{bw * 0.95:.1f}" '
        f'height="{HEIGHT - PAD - (by + c * ky):.1f}" fill="#8250df"/>'
        for i, c in enumerate(counts)
    )
    label = f"{x_label} ({lo:,.3g} to {hi:,.3g})"
    return _frame(title, body, 0.0, float(max(counts)), label, fmt="{:,.0f}")
