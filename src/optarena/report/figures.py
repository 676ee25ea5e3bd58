"""Draw a claim's ``Plot`` (data) as a PNG.

Figures are built with ``matplotlib.figure.Figure`` and an Agg canvas, never ``pyplot``: no global
backend is switched (a user's interactive backend keeps working) and no global figure registry is
touched, so drawing is safe from several threads.
"""

from __future__ import annotations

import base64
import io
import math
from collections.abc import Callable, Sequence

import matplotlib
import numpy as np
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import LogNorm
from matplotlib.figure import Figure

from optarena.plots import Plot, Series

WIDTH_IN = 7.0
HEIGHT_IN = 4.2
DPI = 100
# With more series than this the legend goes outside the axes, where it hides no data.
LEGEND_INSIDE_MAX = 4
CONTOUR_LEVELS = 20


def render(plot: Plot) -> bytes:
    """The plot as PNG bytes, drawn according to ``plot.kind``."""
    try:
        draw = _DRAWERS[plot.kind]
    except KeyError:
        raise ValueError(
            f"plot kind must be one of {sorted(_DRAWERS)}, got {plot.kind!r} (plot {plot.title!r})"
        ) from None
    try:
        return _draw_png(plot, draw)
    except ValueError:
        # A label with paired '$' that is not valid mathtext fails only when drawn: show the
        # text literally rather than lose the figure (any other error recurs and is raised).
        with matplotlib.rc_context({"text.parse_math": False}):
            return _draw_png(plot, draw)


def to_data_uri(png: bytes) -> str:
    """``data:image/png;base64,...`` for an inline ``<img src>``."""
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def _draw_png(plot: Plot, draw: Callable[[Axes, Plot], None]) -> bytes:
    height = HEIGHT_IN * 1.2 if plot.kind == "trajectories" else HEIGHT_IN
    fig = Figure(figsize=(WIDTH_IN, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    draw(ax, plot)
    ax.set_title(plot.title)
    ax.set_xlabel(plot.xlabel)
    ax.set_ylabel(plot.ylabel)
    _legend(fig, ax, plot)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI)
    return buffer.getvalue()


def _legend(fig: Figure, ax: Axes, plot: Plot) -> None:
    handles, labels = ax.get_legend_handles_labels()
    if len(plot.series) <= 1 or not handles:
        return
    if len(handles) <= LEGEND_INSIDE_MAX:
        ax.legend(fontsize="small", loc="best", framealpha=0.8)
    else:
        fig.legend(handles, labels, fontsize="small", loc="outside right upper")


def _finite(*columns: Sequence[float] | None, positive: Sequence[bool] = ()) -> list[np.ndarray]:
    """The columns with every index dropped where any column is non-finite (or, where
    ``positive[i]`` is set, not > 0: such points cannot be drawn on a log axis)."""
    arrays = [np.asarray(c, dtype=float) for c in columns if c is not None]
    n = min((len(a) for a in arrays), default=0)
    arrays = [a[:n] for a in arrays]
    keep = np.ones(n, dtype=bool)
    for i, a in enumerate(arrays):
        keep &= np.isfinite(a)
        if i < len(positive) and positive[i]:
            keep &= a > 0
    return [a[keep] for a in arrays]


def _has_band(series: Series) -> bool:
    return series.lo is not None and series.hi is not None


def _scales(ax: Axes, plot: Plot) -> None:
    if plot.logx:
        ax.set_xscale("log")
    if plot.logy:
        ax.set_yscale("log")


def _no_data(ax: Axes) -> None:
    ax.text(0.5, 0.5, "no finite data", ha="center", va="center", transform=ax.transAxes,
            color="0.4")


def _draw_curves(ax: Axes, plot: Plot) -> None:
    drawn = 0
    for series in plot.series:
        x, y = _finite(series.x, series.y, positive=(plot.logx, plot.logy))
        if x.size == 0:
            continue
        (line,) = ax.plot(x, y, label=series.label, marker="o" if x.size <= 12 else None,
                          markersize=3)
        drawn += 1
        if _has_band(series):
            bx, lo, hi = _finite(series.x, series.lo, series.hi,
                                 positive=(plot.logx, plot.logy, plot.logy))
            ax.fill_between(bx, lo, hi, alpha=0.2, color=line.get_color(), linewidth=0)
    if not drawn:
        _no_data(ax)
        return
    _scales(ax, plot)
    ax.grid(True, which="major", alpha=0.3)


def _draw_profile(ax: Axes, plot: Plot) -> None:
    """Performance profile: rho(tau), the share of problems solved within a factor tau of the
    best, a non-decreasing step function in [0, 1]."""
    drawn = 0
    for series in plot.series:
        tau, rho = _finite(series.x, series.y, positive=(plot.logx,))
        if tau.size == 0:
            continue
        order = np.argsort(tau, kind="stable")
        ax.step(tau[order], rho[order], where="post", label=series.label)
        drawn += 1
    if not drawn:
        _no_data(ax)
        return
    if plot.logx:
        ax.set_xscale("log")
    ax.set_ylim(-0.02, 1.02)
    ax.grid(True, which="major", alpha=0.3)


def _draw_bars(ax: Axes, plot: Plot) -> None:
    n_series = max(len(plot.series), 1)
    width = 0.8 / n_series
    n_categories = len(plot.categories or [])
    for i, series in enumerate(plot.series):
        x, y, lo, hi = _bar_columns(series)
        keep = np.isfinite(x) & np.isfinite(y) & ((y > 0) if plot.logy else True)
        x, y, lo, hi = x[keep], y[keep], lo[keep], hi[keep]
        if x.size == 0:
            continue
        n_categories = max(n_categories, int(x.max()) + 1)
        # A missing or non-finite interval end (or one that excludes the bar) gets no whisker.
        yerr = np.nan_to_num(np.vstack([y - lo, hi - y]), nan=0.0, posinf=0.0, neginf=0.0)
        offset = (i - (n_series - 1) / 2) * width
        ax.bar(x + offset, y, width=width * 0.95, label=series.label,
               yerr=np.clip(yerr, 0, None) if _has_band(series) else None,
               capsize=3, error_kw={"elinewidth": 1, "ecolor": "0.2"})
    ticks = list(range(n_categories))
    names = list(plot.categories or [])[: len(ticks)]
    names += [str(t) for t in ticks[len(names):]]
    ax.set_xticks(ticks, names)
    if len(ticks) > 4 and any(len(name) > 8 for name in names):
        for label in ax.get_xticklabels():
            label.set_rotation(30)
            label.set_horizontalalignment("right")
    if plot.logy:
        ax.set_yscale("log")
    ax.grid(True, axis="y", alpha=0.3)
    ax.set_axisbelow(True)


def _bar_columns(series: Series) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """x, y, lo, hi as float arrays of len(x); missing values are NaN."""
    n = len(series.x)

    def column(values: Sequence[float] | None) -> np.ndarray:
        a = np.full(n, np.nan)
        if values is not None:
            v = np.asarray(values, dtype=float)[:n]
            a[: v.size] = v
        return a

    return column(series.x), column(series.y), column(series.lo), column(series.hi)


def _draw_trajectories(ax: Axes, plot: Plot) -> None:
    """Loss-surface contours with each optimizer's 2-D path: circle at the start, square at the
    end, a star at the known minimum."""
    contour = plot.contour or {}
    if contour:
        _draw_contour(ax, contour)
    # Past ten paths the default cycle repeats its colours: the later ones are dashed.
    for i, series in enumerate(plot.series):
        x, y = _finite(series.x, series.y)
        if x.size == 0:
            continue
        (line,) = ax.plot(x, y, label=series.label, linewidth=1.3, alpha=0.9, linestyle="-" if i < 10 else "--")
        color = line.get_color()
        ax.plot(x[0], y[0], marker="o", color=color, markersize=6, markeredgecolor="black",
                markeredgewidth=0.5)
        ax.plot(x[-1], y[-1], marker="s", color=color, markersize=5, markeredgecolor="black",
                markeredgewidth=0.5)
    minimum = contour.get("minimum")
    if minimum is not None and len(minimum) >= 2 and all(map(math.isfinite, minimum[:2])):
        ax.plot(minimum[0], minimum[1], marker="*", color="gold", markersize=16,
                markeredgecolor="black", markeredgewidth=0.8, linestyle="none", zorder=5)


def _draw_contour(ax: Axes, contour: dict) -> None:
    x = np.asarray(contour["x"], dtype=float)
    y = np.asarray(contour["y"], dtype=float)
    z = np.ma.masked_invalid(np.asarray(contour["z"], dtype=float))
    if z.shape != (y.size, x.size):
        raise ValueError(
            f"contour z must have shape (len(y), len(x)) = ({y.size}, {x.size}), got {z.shape}"
        )
    # A diverging path must not stretch the axes: the contour's extent frames the picture.
    ax.set_xlim(x.min(), x.max())
    ax.set_ylim(y.min(), y.max())
    if z.count() == 0:
        return
    z_min, z_max = float(z.min()), float(z.max())
    if z_min >= 0 and z_max > 0:
        # z can span many decades (Rosenbrock: 0 to 1e5): evenly spaced levels in log space.
        floor = float(z[z > 0].min()) if z_min == 0 else z_min
        floor = max(floor, z_max * 1e-12)
        levels = np.logspace(math.log10(floor), math.log10(z_max), CONTOUR_LEVELS)
        norm = LogNorm(vmin=levels[0], vmax=levels[-1])
        z = np.ma.masked_less_equal(z, 0)
        ax.contourf(x, y, z, levels=levels, norm=norm, cmap="Greys_r", alpha=0.35)
        ax.contour(x, y, z, levels=levels, norm=norm, colors="0.45", linewidths=0.5)
    elif z_max > z_min:
        ax.contourf(x, y, z, levels=CONTOUR_LEVELS, cmap="Greys_r", alpha=0.35)
        ax.contour(x, y, z, levels=CONTOUR_LEVELS, colors="0.45", linewidths=0.5)


_DRAWERS: dict[str, Callable[[Axes, Plot], None]] = {
    "curves": _draw_curves,
    "profile": _draw_profile,
    "bars": _draw_bars,
    "trajectories": _draw_trajectories,
}
