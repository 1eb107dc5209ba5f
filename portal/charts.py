"""Server-rendered bar charts: the geometry here, the SVG in ``_macros/dashboard.html``.

No chart library and no script: the page works offline, under a strict CSP and
without JavaScript. The SVG carries only bars; the numbers around it are HTML, so
they stay readable when the chart is squeezed to 375 px.
"""

from __future__ import annotations

from dataclasses import dataclass

WIDTH = 600
HEIGHT = 120


@dataclass(frozen=True)
class Bar:
    x: float
    y: float
    width: float
    height: float
    value: int


@dataclass(frozen=True)
class BarChart:
    bars: list[Bar]
    top: int  # the value at the top of the scale: a round number at or above the highest bar
    width: int = WIDTH
    height: int = HEIGHT

    @property
    def half(self) -> int | float:
        half = self.top / 2
        return int(half) if half == int(half) else half


def nice_top(highest: int) -> int:
    """The smallest of 1, 2, 2.5, 5 × 10ⁿ that is at least ``highest`` (1 for an empty chart)."""
    if highest <= 0:
        return 1
    scale = 1
    while True:
        for step in (1, 2, 2.5, 5):
            candidate = step * scale
            if candidate >= highest and float(candidate).is_integer():
                return int(candidate)
        scale *= 10


def bar_chart(values: list[int]) -> BarChart:
    """Bars for ``values`` left to right; negative values (a day of refunds) draw as zero."""
    top = nice_top(max(values, default=0))
    slot = WIDTH / max(len(values), 1)
    gap = min(slot * 0.2, 6)
    bars = []
    for index, value in enumerate(values):
        height = HEIGHT * max(value, 0) / top
        # A non-zero day always shows, however small against the highest.
        if value > 0:
            height = max(height, 1.5)
        bars.append(
            Bar(
                x=round(index * slot + gap / 2, 2),
                y=round(HEIGHT - height, 2),
                width=round(slot - gap, 2),
                height=round(height, 2),
                value=value,
            )
        )
    return BarChart(bars, top)
