"""Means with 95% confidence intervals (Student's t), with no statistics package."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable, Optional

#: two-sided 95% quantiles of Student's t for 1..30 degrees of freedom
_T95 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145, 2.131,
        2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042)
_T95_TAIL = ((40, 2.021), (60, 2.000), (120, 1.980))


def t95(df: int) -> float:
    """The 97.5% quantile of Student's t with ``df`` degrees of freedom (tabulated; 1.96 beyond 120)."""
    if df < 1:
        raise ValueError("at least one degree of freedom")
    if df <= len(_T95):
        return _T95[df - 1]
    for limit, value in _T95_TAIL:
        if df <= limit:
            return value
    return 1.960


@dataclass(frozen=True)
class Interval:
    """A mean of ``n`` values with its 95% interval (``low``/``high`` None with fewer than two values)."""

    mean: Optional[float]
    low: Optional[float]
    high: Optional[float]
    n: int

    def as_dict(self) -> dict:
        def r(value):
            return None if value is None else round(value, 4)

        return {"mean": r(self.mean), "low": r(self.low), "high": r(self.high), "n": self.n}

    @property
    def half_width(self) -> Optional[float]:
        return None if self.low is None else (self.high - self.low) / 2

    def text(self) -> str:
        if self.mean is None:
            return "–"
        if self.low is None:
            return f"{self.mean:.3f}"
        return f"{self.mean:.3f} ± {self.half_width:.3f}"


def mean_interval(values: Iterable[Optional[float]]) -> Interval:
    """The mean of the values that are not None, and its 95% t-interval."""
    data = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    n = len(data)
    if n == 0:
        return Interval(None, None, None, 0)
    mean = sum(data) / n
    if n == 1:
        return Interval(mean, None, None, 1)
    sd = math.sqrt(sum((v - mean) ** 2 for v in data) / (n - 1))
    half = t95(n - 1) * sd / math.sqrt(n)
    return Interval(mean, mean - half, mean + half, n)
