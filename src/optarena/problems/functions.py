"""Two-dimensional test functions and quadratics: small problems whose answer is known in closed form.

The 2-D functions (Rosenbrock, a narrow valley, Beale) are there to be looked at: `surface(xs, ys)`
gives the contour-plot grid and `minimum` the optimum, so trajectories of every optimizer can be
drawn on them. The quadratics isolate one difficulty each: ill-conditioning with gradient noise
(DeepOBS's quadratic), plain gradient noise, and a gradient scale that changes mid-run.
"""

from __future__ import annotations

import abc
import math

import numpy as np
import torch
from torch import Tensor

from optarena.problems._checks import check_dtype, check_float, check_int
from optarena.problems._init import per_seed


class _Surface2D(abc.ABC):
    """Shared parts of the 2-D functions: params {"xy": (R, 2)}, a seeded start near `start`.

    `f(x, y)` uses only arithmetic, so it serves torch tensors (training) and NumPy arrays (`surface`).
    The loss is deterministic: `batch` returns None and train_loss = val_loss = f.
    """

    name: str
    tags: frozenset[str]
    loss_bound = 1e6
    default_steps = 500
    batch_size = None
    start: tuple[float, float]
    minimum: tuple[float, float]

    def __init__(
        self,
        start: tuple[float, float] | None = None,
        jitter: float = 0.05,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str = "cpu",
    ) -> None:
        if start is not None:
            if len(start) != 2:
                raise ValueError(f"start must be a pair (x, y), got {start!r}")
            self.start = (check_float("start[0]", start[0]), check_float("start[1]", start[1]))
        self.jitter = check_float("jitter", jitter, at_least=0.0)
        self.dtype = check_dtype(dtype)
        self.device = torch.device(device)

    @abc.abstractmethod
    def f(self, x, y):
        """The function's value at (x, y), elementwise."""

    def init_params(self, seeds: Tensor) -> dict[str, Tensor]:
        start = torch.tensor(self.start, dtype=self.dtype)
        return per_seed(
            seeds, lambda g: {"xy": start + self.jitter * torch.randn(2, generator=g, dtype=self.dtype)}, self.device
        )

    def batch(self, step: int, generator: torch.Generator) -> None:
        return None

    def loss(self, params: dict[str, Tensor], batch: None = None) -> Tensor:
        xy = params["xy"]
        return self.f(xy[:, 0], xy[:, 1])

    def evaluate(self, params: dict[str, Tensor]) -> dict[str, Tensor]:
        with torch.no_grad():
            value = self.loss(params)
        return {"train_loss": value, "val_loss": value.clone()}

    def surface(self, xs, ys) -> np.ndarray:
        """f on the grid xs x ys, shape (len(ys), len(xs)), as matplotlib's `contour(xs, ys, Z)` wants."""
        x, y = np.meshgrid(np.asarray(xs, dtype=np.float64), np.asarray(ys, dtype=np.float64))
        return np.asarray(self.f(x, y))


class Rosenbrock(_Surface2D):
    """Rosenbrock's banana: f(x, y) = (1 - x)^2 + 100 (y - x^2)^2, minimum 0 at (1, 1).

    Size 2; source Rosenbrock (1960). In the suite because its curved, flat-bottomed valley is the
    classic picture of how optimizers differ: the steepest direction points across the valley, not
    along it. Start (-1.5, 2.0) plus seeded Gaussian jitter (std `jitter`).
    """

    name = "rosenbrock"
    tags = frozenset({"2d", "nonconvex"})
    start = (-1.5, 2.0)
    minimum = (1.0, 1.0)

    def f(self, x, y):
        return (1 - x) ** 2 + 100 * (y - x**2) ** 2


class NarrowValley(_Surface2D):
    """A narrow valley: f(z) = 0.5 z^T A z with A's eigenvalues 1 and `condition_number` (default 100).

    The eigenvectors are rotated 45 degrees: the valley floor runs along (1, 1)/sqrt(2) (curvature 1)
    and the steep axis is `steep_direction` = (1, -1)/sqrt(2) (curvature `condition_number`). Minimum
    0 at (0, 0); start (-2.0, -1.0), off the floor, plus seeded jitter. With curvature 100 plain
    gradient descent is stable for lr < 0.02, so lr ~ 1e-2 zig-zags across the valley while creeping
    along it. Size 2; a textbook construction. In the suite for claim M1: counting sign changes of
    the step along `steep_direction` measures oscillation across the valley, with and without momentum.
    """

    name = "narrow_valley"
    tags = frozenset({"2d", "convex", "ill-conditioned"})
    start = (-2.0, -1.0)
    minimum = (0.0, 0.0)
    steep_direction = (1 / math.sqrt(2), -1 / math.sqrt(2))

    def __init__(
        self,
        condition_number: float = 100.0,
        start: tuple[float, float] | None = None,
        jitter: float = 0.05,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str = "cpu",
    ) -> None:
        super().__init__(start, jitter, dtype, device)
        self.condition_number = check_float("condition_number", condition_number, at_least=1.0)
        # A = [[a, b], [b, a]]: eigenvalue a + b on (1, 1), a - b on (1, -1).
        flat, steep = 1.0, self.condition_number
        self.eigenvalues = (flat, steep)
        self._a, self._b = (steep + flat) / 2, (flat - steep) / 2

    def f(self, x, y):
        return 0.5 * (self._a * x**2 + 2 * self._b * x * y + self._a * y**2)


class Beale(_Surface2D):
    """Beale's function: (1.5 - x + xy)^2 + (2.25 - x + xy^2)^2 + (2.625 - x + xy^3)^2, minimum 0 at (3, 0.5).

    Size 2; source Beale (1958), a standard optimization test function. In the suite because its
    flat plateaus and sharp ridges (terms up to y^6) punish steps that do not adapt to the scale of
    the gradient. Start (1.0, 1.4) plus seeded jitter.
    """

    name = "beale"
    tags = frozenset({"2d", "nonconvex"})
    start = (1.0, 1.4)
    minimum = (3.0, 0.5)

    def f(self, x, y):
        return (1.5 - x + x * y) ** 2 + (2.25 - x + x * y**2) ** 2 + (2.625 - x + x * y**3) ** 2


class _Quadratic(abc.ABC):
    """Shared parts of the quadratics: params {"x": (R, dim)}, start 1 + 0.1 N(0, I) (DeepOBS starts
    its quadratic at all ones), and `evaluate` = the noise-free, unscaled f as train and val loss."""

    name: str
    tags: frozenset[str]
    loss_bound = 1e6
    dim: int

    def __init__(self, dtype: torch.dtype, device: torch.device | str) -> None:
        self.dtype = check_dtype(dtype)
        self.device = torch.device(device)

    @abc.abstractmethod
    def f(self, x: Tensor) -> Tensor:
        """The noise-free loss of each run, x (R, dim) -> (R,)."""

    def init_params(self, seeds: Tensor) -> dict[str, Tensor]:
        dim, dtype = self.dim, self.dtype
        return per_seed(seeds, lambda g: {"x": 1 + 0.1 * torch.randn(dim, generator=g, dtype=dtype)}, self.device)

    def evaluate(self, params: dict[str, Tensor]) -> dict[str, Tensor]:
        with torch.no_grad():
            value = self.f(params["x"])
        return {"train_loss": value, "val_loss": value.clone()}


class _DiagonalQuadratic(_Quadratic):
    """f(x) = 0.5 sum_i h_i x_i^2 with curvatures h spread evenly in log scale over [0.1, 10]."""

    def __init__(self, dim: int, dtype: torch.dtype, device: torch.device | str) -> None:
        super().__init__(dtype, device)
        self.dim = check_int("dim", dim, 1)
        self.curvatures = torch.tensor(np.logspace(-1.0, 1.0, self.dim), dtype=dtype, device=self.device)

    def f(self, x: Tensor) -> Tensor:
        return 0.5 * (self.curvatures * x * x).sum(-1)


class QuadraticDeepOBS(_Quadratic):
    """DeepOBS's noisy quadratic (`quadratic_deep`): f(x) = 0.5 x^T H x on R^100, H = Q diag(eigs) Q^T.

    Q is a fixed random rotation; 90% of the eigenvalues are uniform in (0, 1) and 10% uniform in
    (30, 60) (drawn once from a fixed seed), so the problem is ill-conditioned with a few steep
    directions. Source: Schneider, Balles & Hennig, "DeepOBS" (ICLR 2019). As in DeepOBS a sample is
    c ~ N(0, noise_level^2 I) (noise_level 0.6 there) with per-sample loss 0.5 (x - c)^T H (x - c);
    the minibatch loss is 0.5 (x - c_bar)^T H (x - c_bar) + const, with c_bar the mean of
    `batch_size` samples. So `batch` draws c_bar ~ N(0, noise_level^2 / batch_size I) (shape
    (1, dim)) and the gradient is H (x - c_bar): noise of scale noise_level / sqrt(batch_size),
    largest along the steep directions. Fresh samples are drawn each step (DeepOBS reuses a training
    set of 1000). `evaluate` reports the noise-free f (minimum 0 at x = 0). In the suite as the
    standard noisy, ill-conditioned convex test (claims R2, R5).
    """

    name = "quadratic_deepobs"
    tags = frozenset({"convex", "ill-conditioned", "noisy"})
    default_steps = 300

    def __init__(
        self,
        dim: int = 100,
        batch_size: int = 128,
        noise_level: float = 0.6,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str = "cpu",
    ) -> None:
        super().__init__(dtype, device)
        self.dim = check_int("dim", dim, 10)
        self.batch_size = check_int("batch_size", batch_size, 1)
        self.noise_level = check_float("noise_level", noise_level, at_least=0.0)
        self.noise_std = self.noise_level / math.sqrt(self.batch_size)
        rng = np.random.RandomState(42)
        n_steep = self.dim // 10
        eigs = np.concatenate([rng.uniform(0.0, 1.0, self.dim - n_steep), rng.uniform(30.0, 60.0, n_steep)])
        # Haar-random rotation: QR of a Gaussian matrix with the signs of R's diagonal fixed.
        q, r = np.linalg.qr(rng.normal(size=(self.dim, self.dim)))
        q *= np.sign(np.diag(r))
        self.eigenvalues, self.rotation = eigs, q
        self.hessian = torch.tensor(q @ np.diag(eigs) @ q.T, dtype=dtype, device=self.device)

    def batch(self, step: int, generator: torch.Generator) -> tuple[Tensor]:
        """(c_bar,): the mean of `batch_size` noise samples, shape (1, dim), on the CPU."""
        return (self.noise_std * torch.randn(1, self.dim, generator=generator, dtype=self.dtype),)

    def f(self, x: Tensor) -> Tensor:
        return 0.5 * ((x @ self.hessian) * x).sum(-1)

    def loss(self, params: dict[str, Tensor], batch: tuple[Tensor] | None) -> Tensor:
        x = params["x"]
        return self.f(x if batch is None else x - batch[0].to(self.device)[:, 0])


class NoisyQuadratic(_DiagonalQuadratic):
    """A diagonal quadratic with additive gradient noise: f(x) = 0.5 sum_i h_i x_i^2 on R^dim (dim 20).

    Curvatures h_i are spread evenly in log scale over [0.1, 10]. Each step `batch` draws
    xi ~ N(0, noise_std^2 I) (shape (1, dim)) and the minibatch loss is f(x) + xi . x, so the
    stochastic gradient is H x + xi: unbiased, with variance noise_std^2 per coordinate wherever x
    is. `evaluate` reports the noise-free f (minimum 0 at 0). A textbook model of SGD noise (e.g.
    Zhang et al. 2019, "Which algorithmic choices matter at which batch sizes?"). In the suite for
    the momentum claim under noise (R2) and for adaptive step sizes (M2, M3). `batch_size` is 1:
    one noise draw per step.
    """

    name = "noisy_quadratic"
    tags = frozenset({"convex", "noisy"})
    default_steps = 500
    batch_size = 1

    def __init__(
        self,
        dim: int = 20,
        noise_std: float = 1.0,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str = "cpu",
    ) -> None:
        super().__init__(dim, dtype, device)
        self.noise_std = check_float("noise_std", noise_std, at_least=0.0)

    def batch(self, step: int, generator: torch.Generator) -> tuple[Tensor]:
        """(xi,): gradient noise, shape (1, dim), on the CPU."""
        return (self.noise_std * torch.randn(1, self.dim, generator=generator, dtype=self.dtype),)

    def loss(self, params: dict[str, Tensor], batch: tuple[Tensor] | None) -> Tensor:
        x = params["x"]
        if batch is None:
            return self.f(x)
        return self.f(x) + (batch[0].to(self.device)[:, 0] * x).sum(-1)


class ScaleShiftQuadratic(_DiagonalQuadratic):
    """A diagonal quadratic whose loss, hence gradient, is multiplied by `scale_factor` (100) from `shift_step` on.

    f(x) = 0.5 sum_i h_i x_i^2 on R^dim (dim 20), curvatures spread evenly in log scale over
    [0.1, 10]. The scale comes through the batch: `batch(step, g)` returns (scale,) of shape (1,)
    (1 before `shift_step`, `scale_factor` from it on; the generator is not used), and the loss is
    scale * f. `evaluate` reports the unscaled f. `shift_step` defaults to default_steps // 2.
    A constructed test. In the suite for claim M3: how AdaGrad's accumulated G and RMSprop's moving
    average react when the gradient scale jumps mid-run. `batch_size` is 1 (the batch is one number).
    """

    name = "scale_shift_quadratic"
    tags = frozenset({"convex", "scale-shift"})
    default_steps = 400
    batch_size = 1

    def __init__(
        self,
        dim: int = 20,
        shift_step: int | None = None,
        scale_factor: float = 100.0,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str = "cpu",
    ) -> None:
        super().__init__(dim, dtype, device)
        self.shift_step = check_int("shift_step", self.default_steps // 2 if shift_step is None else shift_step, 0)
        self.scale_factor = check_float("scale_factor", scale_factor, above=0.0)

    def batch(self, step: int, generator: torch.Generator) -> tuple[Tensor]:
        """(scale,): shape (1,), on the CPU."""
        scale = self.scale_factor if step >= self.shift_step else 1.0
        return (torch.tensor([scale], dtype=self.dtype),)

    def loss(self, params: dict[str, Tensor], batch: tuple[Tensor] | None) -> Tensor:
        value = self.f(params["x"])
        return value if batch is None else batch[0].to(self.device)[:, 0] * value
