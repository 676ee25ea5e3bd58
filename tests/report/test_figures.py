"""Each plot kind draws a valid PNG, whatever non-finite values the data holds."""

from __future__ import annotations

import base64
import io
import math

import matplotlib
import matplotlib.image
import numpy as np
import pytest

from report_samples import (LRS, bars_plot, curves_plot, profile_plot, rosenbrock_contour,
                      sensitivity_plot, trajectories_plot)
from optarena.plots import Plot, Series
from optarena.report.figures import render, to_data_uri

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def decode(png: bytes) -> np.ndarray:
    assert png.startswith(PNG_SIGNATURE)
    image = matplotlib.image.imread(io.BytesIO(png), format="png")
    assert image.ndim == 3 and image.shape[0] > 100 and image.shape[1] > 100
    return image


def is_blank(image: np.ndarray) -> bool:
    return bool(np.all(image == image[0, 0]))


@pytest.mark.parametrize("make", [curves_plot, sensitivity_plot, profile_plot, bars_plot,
                                  trajectories_plot])
def test_each_kind_renders_a_png(make):
    image = decode(render(make()))
    assert not is_blank(image)
    # ~7 inches wide at ~100 dpi
    assert 600 <= image.shape[1] <= 800


def test_unknown_kind_names_the_allowed_kinds():
    with pytest.raises(ValueError, match="curves"):
        render(Plot("pie", "t", "x", "y", []))


def test_non_finite_values_are_dropped_not_fatal():
    y = [1.0, math.nan, math.inf, -math.inf, 0.5, 0.25]
    band = Series("with band", list(range(6)), y, lo=[math.nan] * 6, hi=[2.0] * 6)
    line = Series("line", [0, 1, math.nan, 3, 4, 5], [1, 2, 3, math.inf, 5, 6])
    for kind in ("curves", "profile", "bars", "trajectories"):
        decode(render(Plot(kind, f"{kind} with NaN", "x", "y", [band, line], logy=kind == "curves",
                           categories=["a", "b"])))


def test_series_with_no_finite_point_still_draws():
    empty = Series("diverged", [1, 2, 3], [math.nan, math.inf, math.nan])
    for kind in ("curves", "profile", "bars", "trajectories"):
        decode(render(Plot(kind, "all diverged", "x", "y", [empty], logx=True, logy=True)))


def test_logx_learning_rate_grid():
    plot = sensitivity_plot()
    assert plot.logx and min(LRS) == 1e-5
    decode(render(plot))
    # A zero learning rate cannot sit on a log axis: it is dropped, not fatal.
    plot.series[0].x = [0.0] + LRS[1:]
    decode(render(plot))


def test_trajectories_on_a_contour_spanning_eight_decades():
    contour = rosenbrock_contour()
    z = np.array(contour["z"])
    contour["z"] = (1e-3 + (z - z.min()) / (z.max() - z.min()) * (1e5 - 1e-3)).tolist()
    contour["z"][0][0] = math.nan  # a hole in the surface
    plot = trajectories_plot()
    plot.contour = contour
    # A path that leaves the picture (diverges) must not stretch the axes.
    plot.series.append(Series("diverging", [0.0, 10.0, 1e6], [0.0, -20.0, math.inf]))
    image = decode(render(plot))
    assert not is_blank(image)


def test_contour_with_negative_values_uses_linear_levels():
    xs = np.linspace(-1, 1, 20)
    z = (np.outer(xs, xs)).tolist()  # saddle, negative half
    plot = Plot("trajectories", "saddle", "x", "y", [Series("p", [0.5, 0], [0.5, 0])],
                contour={"x": xs.tolist(), "y": xs.tolist(), "z": z})
    decode(render(plot))


def test_contour_shape_mismatch_is_explained():
    plot = Plot("trajectories", "bad", "x", "y", [],
                contour={"x": [0, 1, 2], "y": [0, 1], "z": [[1, 2], [3, 4]]})
    with pytest.raises(ValueError, match=r"shape \(len\(y\), len\(x\)\)"):
        render(plot)


def test_many_series_put_the_legend_outside():
    series = [Series(f"optimizer {k}", [1, 2, 3], [k, k + 1, k + 2]) for k in range(8)]
    decode(render(Plot("curves", "eight optimizers", "step", "loss", series)))


def test_text_that_is_not_valid_mathtext_is_drawn_literally():
    plot = curves_plot(title="costs $5 and $x^{ here")
    decode(render(plot))


def test_render_leaves_pyplot_backend_alone():
    backend = matplotlib.get_backend()
    render(curves_plot())
    assert matplotlib.get_backend() == backend


def test_data_uri_round_trips():
    png = render(profile_plot())
    uri = to_data_uri(png)
    assert uri.startswith("data:image/png;base64,")
    assert base64.b64decode(uri.split(",", 1)[1]) == png
