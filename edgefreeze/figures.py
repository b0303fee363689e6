"""Figures as people read them in reports and messages: a metric drop in points, a share
in percent, an error in two significant digits, a latency in milliseconds. The manifest
keeps the raw values; only what people read is rounded."""

from __future__ import annotations


def points(share: float) -> str:
    """A difference of two shares (a metric drop): 0.0019 is '0.19 pt'."""
    return f"{share * 100:.2f} pt"


def percent(share: float) -> str:
    """A share: 0.9717 is '97.17 %'."""
    return f"{share * 100:.2f} %"


def error(value: float) -> str:
    """A small absolute error: 9.05991e-06 is '9.1e-06', 1.0243 is '1.0'."""
    return f"{value:#.2g}"


def milliseconds(value: float) -> str:
    """A latency in three significant digits: '2.71 ms'."""
    return f"{value:.3g} ms"


def rule_figure(rule: str, value: float) -> str:
    """A gate rule's measured value or limit, by what the rule (`FORM.RULE`) measures."""
    kind = rule.rpartition(".")[2]
    if kind.endswith("checks"):  # a count (gate.targets' failed checks)
        return f"{value:.0f}"
    if kind.endswith("metric_drop"):
        return points(value)
    if kind.endswith(("agreement", "share")):
        return percent(value)
    return error(value)
