"""Figure data shared by the claims, compare and the report: a `Plot` of `Series`, drawn later by
``optarena.report.figures`` (matplotlib). Plot text stays in English (matplotlib has no CJK font
here); ``Plot.contour`` may carry "minimum": [x, y] for a star marker.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass
class Series:
    """One line (or band, or 2-D path) of a plot. ``lo``/``hi`` give an interval band when present."""

    label: str
    x: list[float]
    y: list[float]
    lo: list[float] | None = None
    hi: list[float] | None = None


@dataclass
class Plot:
    """A figure as data: ``kind`` is one of "curves", "bars", "profile", "trajectories".

    For "trajectories", ``contour`` holds {"x": [...], "y": [...], "z": [[...]]} of the loss surface.
    For "bars", each series has one x (category index) per bar and ``categories`` names them.
    """

    kind: str
    title: str
    xlabel: str
    ylabel: str
    series: list[Series]
    logx: bool = False
    logy: bool = False
    contour: dict[str, Any] | None = None
    categories: list[str] | None = None
    caption: str = ""
