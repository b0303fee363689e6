"""Small inline SVG charts for report.html: a line chart, a bar chart, a heat map.

A report that ships inside a bundle and is opened on an air-gapped release machine cannot
load a charting library from the network, and a few shapes do not justify bundling one;
these write plain SVG elements that any browser draws.
"""

from __future__ import annotations

from collections.abc import Sequence
from html import escape

WIDTH, HEIGHT = 560, 240
MARGIN = {"left": 56, "right": 16, "top": 16, "bottom": 40}
COLOURS = ("#3266cc", "#dc3912", "#ff9900", "#109618", "#990099", "#0099c6")


def _ticks(low: float, high: float, count: int = 5, whole: bool = False) -> list[float]:
    """`count` evenly spaced ticks; only whole numbers when `whole` (epochs, steps)."""
    if high == low:
        return [low]
    step = (high - low) / (count - 1)
    if whole:
        step = max(1.0, round(step))
        return [float(v) for v in range(int(low), int(high) + 1, int(step))]
    return [low + i * step for i in range(count)]


def _number(value: float) -> str:
    return f"{value:.3g}" if abs(value) < 1000 else f"{value:,.0f}"


def line_chart(
    chart_id: str,
    series: Sequence[tuple[str, Sequence[tuple[float, float]]]],
    x_label: str,
    y_label: str,
) -> str:
    """Lines of (x, y) points, one per named series, on shared axes."""
    points = [p for _, values in series for p in values]
    if not points:
        return ""
    xs, ys = [x for x, _ in points], [y for _, y in points]
    x0, x1 = min(xs), max(xs) if max(xs) > min(xs) else min(xs) + 1
    y0, y1 = min(ys), max(ys) if max(ys) > min(ys) else min(ys) + 1
    left, top = MARGIN["left"], MARGIN["top"]
    inner_w = WIDTH - left - MARGIN["right"]
    inner_h = HEIGHT - top - MARGIN["bottom"]

    def at(x: float, y: float) -> tuple[float, float]:
        return (left + (x - x0) / (x1 - x0) * inner_w, top + (1 - (y - y0) / (y1 - y0)) * inner_h)

    parts = [_axes(left, top, inner_w, inner_h, x_label, y_label)]
    for value in _ticks(y0, y1):
        y = top + (1 - (value - y0) / (y1 - y0)) * inner_h
        parts.append(
            f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end">{_number(value)}</text>'
        )
    for value in _ticks(x0, x1, whole=all(float(x).is_integer() for x in xs)):
        x = left + (value - x0) / (x1 - x0) * inner_w
        parts.append(
            f'<text x="{x:.1f}" y="{top + inner_h + 16}" text-anchor="middle">'
            f"{_number(value)}</text>"
        )
    for index, (name, values) in enumerate(series):
        colour = COLOURS[index % len(COLOURS)]
        path = " ".join(f"{px:.1f},{py:.1f}" for px, py in (at(x, y) for x, y in values))
        parts.append(
            f'<polyline class="series" fill="none" stroke="{colour}" '
            f'stroke-width="1.5" points="{path}"><title>{escape(name)}</title>'
            "</polyline>"
        )
        if len(values) <= 30:  # few points (epochs): mark each
            parts += [
                f'<circle cx="{px:.1f}" cy="{py:.1f}" r="3" fill="{colour}"/>'
                for px, py in (at(x, y) for x, y in values)
            ]
        parts.append(
            f'<text x="{left + 8 + 150 * index}" y="{top + 10}" fill="{colour}">'
            f"{escape(name)}</text>"
        )
    return _svg(chart_id, WIDTH, HEIGHT, parts)


def bar_chart(chart_id: str, values: dict[str, float], unit: str) -> str:
    """One horizontal bar per name, labelled with its value."""
    if not values:
        return ""
    row, left = 26, 90
    height = MARGIN["top"] + row * len(values) + 8
    largest = max(values.values()) or 1.0
    inner_w = WIDTH - left - 90
    parts = []
    for index, (name, value) in enumerate(values.items()):
        y = MARGIN["top"] + index * row
        width = max(value / largest * inner_w, 1.0)
        parts += [
            f'<text x="{left - 6}" y="{y + 15}" text-anchor="end">{escape(name)}</text>',
            f'<rect class="bar" x="{left}" y="{y + 2}" width="{width:.1f}" height="18" '
            f'fill="{COLOURS[index % len(COLOURS)]}"/>',
            f'<text x="{left + width + 6:.1f}" y="{y + 15}">{value:.3g} {escape(unit)}</text>',
        ]
    return _svg(chart_id, WIDTH, height, parts)


def heat_map(
    chart_id: str, matrix: Sequence[Sequence[int]], labels: Sequence[str], title: str
) -> str:
    """A confusion matrix: rows are true labels, columns predicted ones; darker is more."""
    cell, left, top = 44, 90, 40
    size = len(matrix)
    largest = max((v for row in matrix for v in row), default=0) or 1
    parts = [
        f'<text x="{left}" y="14" font-weight="bold">{escape(title)}</text>',
        f'<text x="{left + size * cell / 2:.0f}" y="30" text-anchor="middle">predicted</text>',
    ]
    for j, name in enumerate(labels):
        parts.append(
            f'<text x="{left + j * cell + cell / 2:.0f}" y="{top + size * cell + 14}" '
            f'text-anchor="middle">{escape(name[:8])}</text>'
        )
    for i, row in enumerate(matrix):
        parts.append(
            f'<text x="{left - 6}" y="{top + i * cell + cell / 2 + 4:.0f}" '
            f'text-anchor="end">{escape(labels[i][:12])}</text>'
        )
        for j, value in enumerate(row):
            shade = value / largest
            fill = f"rgb({int(255 - 205 * shade)},{int(255 - 155 * shade)},255)"
            ink = "#fff" if shade > 0.6 else "#000"
            parts += [
                f'<rect class="cell" x="{left + j * cell}" y="{top + i * cell}" '
                f'width="{cell}" height="{cell}" fill="{fill}" stroke="#fff"/>',
                f'<text x="{left + j * cell + cell / 2:.0f}" '
                f'y="{top + i * cell + cell / 2 + 4:.0f}" text-anchor="middle" '
                f'fill="{ink}">{value}</text>',
            ]
    return _svg(chart_id, left + size * cell + 16, top + size * cell + 24, parts)


def _axes(left: float, top: float, width: float, height: float, x_label: str, y_label: str) -> str:
    bottom = top + height
    return (
        f'<line x1="{left}" y1="{top}" x2="{left}" y2="{bottom}" stroke="#888"/>'
        f'<line x1="{left}" y1="{bottom}" x2="{left + width}" y2="{bottom}" stroke="#888"/>'
        f'<text x="{left + width / 2:.0f}" y="{bottom + 32}" text-anchor="middle">'
        f"{escape(x_label)}</text>"
        f'<text x="12" y="{top + height / 2:.0f}" text-anchor="middle" '
        f'transform="rotate(-90 12 {top + height / 2:.0f})">{escape(y_label)}</text>'
    )


def _svg(chart_id: str, width: float, height: float, parts: list[str]) -> str:
    return (
        f'<svg id="{escape(chart_id)}" class="chart" xmlns="http://www.w3.org/2000/svg" '
        f'width="{width:.0f}" height="{height:.0f}" viewBox="0 0 {width:.0f} {height:.0f}" '
        f'font-family="sans-serif" font-size="11">{"".join(parts)}</svg>'
    )
