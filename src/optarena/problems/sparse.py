"""Logistic regression on sparse binary features: the setting of AdaGrad (claim R3) and FTRL (claim R8).

A sample is a row of feature ids (a padded index matrix (N, k); every listed feature has value 1),
so the logit of run r is w[r, ids].sum() + bias: a gather, never a dense (N, n_features) matrix.
Both data sets are synthetic with a known true weight vector `w_true`, so the error on the weights
of rarely seen features can be measured directly.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from optarena.problems import _nn
from optarena.problems._checks import check_float, check_int
from optarena.problems._supervised import SupervisedProblem

# Evaluation gathers from this many bytes of weights at a time (a few runs; about an L2/L3 cache).
EVAL_CACHE_BYTES = 2**23
# A feature seen between 1 and this many times in training counts as rare.
RARE_MAX_COUNT = 5


class _SparseLogistic(SupervisedProblem):
    """Shared parts: params {"w": (R, n_features + 1)} (last entry = bias), zero start, logistic loss.

    Subclasses generate (ids, labels) and call `_set_sparse_data`. Starting at w = 0 (loss log 2) is
    the usual start of online linear learners such as FTRL, so init does not depend on the seed.
    """

    # Large learning rates are usual for sparse linear models (FTRL, AdaGrad); a minibatch whose rare
    # features got big weights can score losses in the tens without the run having blown up.
    loss_bound = 1e3
    example_loss = staticmethod(_nn.binary_cross_entropy)
    correct = staticmethod(_nn.binary_correct)
    n_features: int
    w_true: Tensor
    bias_true: float

    def _set_sparse_data(self, ids: np.ndarray, labels: np.ndarray, n_train: int) -> None:
        self._set_data(ids[:n_train], labels[:n_train], ids[n_train:], labels[n_train:])
        self.activation_size = ids.shape[1] + 1
        self.feature_counts = np.bincount(ids[:n_train].ravel(), minlength=self.n_features)
        self.rare_features = np.flatnonzero((self.feature_counts >= 1) & (self.feature_counts <= RARE_MAX_COUNT))
        self._rare = torch.from_numpy(self.rare_features).to(self.device)

    def init_params(self, seeds: Tensor) -> dict[str, Tensor]:
        runs = torch.as_tensor(seeds).numel()
        return {"w": torch.zeros(runs, self.n_features + 1, dtype=self.dtype, device=self.device)}

    def forward(self, params: dict[str, Tensor], ids: Tensor) -> Tensor:
        """Logits (R, B) from feature ids (R, B, k)."""
        w = params["w"]
        runs, batch, k = ids.shape
        return torch.gather(w, 1, ids.reshape(runs, batch * k)).view(runs, batch, k).sum(-1) + w[:, -1:]

    def restrict(self, batch: tuple[Tensor, ...]) -> tuple[dict[str, Tensor], tuple[Tensor, Tensor]]:
        """The columns of w that a minibatch reaches, and the minibatch as w restricted to them sees it.

        Returns ({"w": columns}, (ids, labels)): columns are the minibatch's feature ids (sorted,
        over every run's minibatch) followed by the bias column; ids are renumbered into them. Then
        ``loss({"w": w[:, columns]}, (ids, labels))`` equals ``loss({"w": w}, batch)``, and the
        gradient of w is zero outside columns: the engine differentiates and, for rules that leave
        zero-gradient coordinates alone, updates only those columns."""
        ids, labels = self.examples(batch)
        columns, local = torch.unique(ids, sorted=True, return_inverse=True)
        columns = torch.cat([columns, columns.new_full((1,), self.n_features)])
        return {"w": columns}, (local, labels)

    def evaluate(self, params: dict[str, Tensor]) -> dict[str, Tensor]:
        metrics = super().evaluate(params)
        with torch.no_grad():
            metrics["rare_weight_error"] = self.rare_weight_error(params)
        return metrics

    def _means(self, params: dict[str, Tensor], x: Tensor, y: Tensor, accuracy: bool = True) -> tuple[Tensor, Tensor]:
        """As for every supervised problem, a few runs at a time: the gathers then read a table
        that stays in cache (one run's w is 4 MB for sparse_ctr), instead of R of them at random."""
        w = params["w"]
        runs = max(1, EVAL_CACHE_BYTES // (w.shape[-1] * w.element_size()))
        parts = [super(_SparseLogistic, self)._means({"w": w[i:i + runs]}, x, y) for i in range(0, w.shape[0], runs)]
        return torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])

    def rare_weight_error(self, params: dict[str, Tensor]) -> Tensor:
        """RMS of w[r, j] - w_true[j] over the rare features j (seen 1 to 5 times in training): (R,)."""
        error = params["w"][:, self._rare] - self.w_true[self._rare]
        return error.square().mean(-1).sqrt()

    def train_data(self) -> tuple[Tensor, Tensor]:
        """(ids LongTensor (n_train, k), labels float tensor (n_train,)) for solvers outside the engine."""
        return self.x_train, self.y_train

    def val_data(self) -> tuple[Tensor, Tensor]:
        return self.x_val, self.y_val

    def to_scipy_csr(self, ids):
        """The (N, n_features) scipy.sparse.csr_matrix of an id matrix (N, k); repeated ids add up."""
        import scipy.sparse

        ids = np.asarray(ids.cpu() if isinstance(ids, Tensor) else ids)
        n, k = ids.shape
        matrix = scipy.sparse.csr_matrix(
            (np.ones(n * k), ids.ravel(), np.arange(0, n * k + 1, k)), shape=(n, self.n_features)
        )
        matrix.sum_duplicates()
        return matrix


def _zipf_cdf(size: int, exponent: float) -> np.ndarray:
    p = np.arange(1, size + 1, dtype=np.float64) ** -exponent
    cdf = np.cumsum(p)
    return cdf / cdf[-1]


def _draw(cdf: np.ndarray, shape, rng: np.random.RandomState) -> np.ndarray:
    """Ids 0..len(cdf)-1 by inverse CDF."""
    return np.minimum(np.searchsorted(cdf, rng.random_sample(shape), side="right"), len(cdf) - 1)


def _labels(logits: np.ndarray, rng: np.random.RandomState) -> np.ndarray:
    return (rng.random_sample(logits.shape) < 1 / (1 + np.exp(-logits))).astype(np.float64)


class SparseZipf(_SparseLogistic):
    """Logistic regression on sparse binary features with Zipf-distributed frequencies.

    n_features = 100,000 ids; each sample has k = 20 distinct active features drawn from a Zipf law
    P(id j) ∝ (j + 1)^-1.1 (id 0 is the most frequent), so a few features appear in most samples and
    tens of thousands appear once or a few times. w_true ~ N(0, 1) per feature, bias 0, labels
    ~ Bernoulli(sigmoid(x . w_true)). 20,000 training and 5,000 held-out samples, generated once from
    a fixed seed. Params {"w": (R, n_features + 1)}, start 0. Synthetic, in the style of the
    AdaGrad paper's motivation (Duchi, Hazan & Singer 2011). In the suite for claim R3 (AdaGrad gives
    larger steps to rarely updated parameters): `evaluate` adds "rare_weight_error", the RMS error of
    the weights of features seen 1 to 5 times in training (`rare_features`) against `w_true`.
    """

    name = "sparse_zipf"
    tags = frozenset({"sparse", "convex"})
    default_steps = 1000

    def __init__(
        self,
        n_features: int = 100_000,
        active_features: int = 20,
        zipf_exponent: float = 1.1,
        n_train: int = 20_000,
        n_val: int = 5_000,
        batch_size: int = 128,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str = "cpu",
    ) -> None:
        super().__init__(batch_size, dtype, device)
        k = check_int("active_features", active_features, 1)
        self.n_features = check_int("n_features", n_features, 2 * k)
        self.zipf_exponent = check_float("zipf_exponent", zipf_exponent, above=0.0)
        n_train, n_val = check_int("n_train", n_train, 1), check_int("n_val", n_val, 1)
        rng = np.random.RandomState(0)
        cdf = _zipf_cdf(self.n_features, self.zipf_exponent)
        ids = np.sort(_draw(cdf, (n_train + n_val, k), rng), axis=1)
        # Binary features: redraw repeated ids within a row until every row has k distinct ids.
        while True:
            repeated = np.zeros(ids.shape, dtype=bool)
            repeated[:, 1:] = ids[:, 1:] == ids[:, :-1]
            if not repeated.any():
                break
            ids[repeated] = _draw(cdf, int(repeated.sum()), rng)
            ids.sort(axis=1)
        w_true = rng.normal(0.0, 1.0, self.n_features)
        self.bias_true = 0.0
        labels = _labels(w_true[ids].sum(1) + self.bias_true, rng)
        self.w_true = torch.tensor(w_true, dtype=dtype, device=self.device)
        self._set_sparse_data(ids, labels, n_train)


class SparseCTR(_SparseLogistic):
    """A click-through-rate-like logistic regression with hashed categorical features (FTRL's setting).

    n_features = 2**20 hashed ids. Each sample has n_fields = 10 categorical fields; field f has a
    vocabulary of geometrically growing size (4 up to 1,000,000 values) drawn from a Zipf law
    (exponent 1.05), and (field, value) is hashed into the id space (collisions included, as with the
    hashing trick); about 90,000 distinct ids occur in training, most of them 5 times or fewer. The
    true weights are per hashed id, w_true ~ N(0, 0.5^2), bias -1.5 (about 30% of samples positive), labels ~ Bernoulli(sigmoid(x . w_true + bias)). 100,000 training and
    20,000 held-out samples, generated once from a fixed seed. Params {"w": (R, n_features + 1)},
    start 0 (R runs hold R x 1M floats: keep R small). Synthetic, modelled on the setting of McMahan
    et al. (2013), "Ad click prediction: a view from the trenches". In the suite for claim R8 (FTRL
    for large-scale linear models); `to_scipy_csr` serves the comparison with scikit-learn.
    """

    name = "sparse_ctr"
    tags = frozenset({"sparse", "convex", "large"})
    default_steps = 2000

    def __init__(
        self,
        n_features: int = 2**20,
        n_fields: int = 10,
        n_train: int = 100_000,
        n_val: int = 20_000,
        batch_size: int = 128,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str = "cpu",
    ) -> None:
        super().__init__(batch_size, dtype, device)
        self.n_features = check_int("n_features", n_features, 2)
        self.n_fields = check_int("n_fields", n_fields, 1)
        n_train, n_val = check_int("n_train", n_train, 1), check_int("n_val", n_val, 1)
        rng = np.random.RandomState(0)
        n = n_train + n_val
        self.field_sizes = np.geomspace(4, 1_000_000, self.n_fields).astype(np.int64)
        values = np.stack([_draw(_zipf_cdf(size, 1.05), n, rng) for size in self.field_sizes], axis=1)
        ids = _hash(np.arange(self.n_fields, dtype=np.uint64), values.astype(np.uint64), self.n_features)
        w_true = rng.normal(0.0, 0.5, self.n_features)
        self.bias_true = -1.5
        labels = _labels(w_true[ids].sum(1) + self.bias_true, rng)
        self.w_true = torch.tensor(w_true, dtype=dtype, device=self.device)
        self._set_sparse_data(ids, labels, n_train)


def _hash(fields: np.ndarray, values: np.ndarray, size: int) -> np.ndarray:
    """Hash (field, value) pairs into 0..size-1 with the splitmix64 finaliser (deterministic)."""
    with np.errstate(over="ignore"):
        h = (fields << np.uint64(32)) ^ values
        h = (h ^ (h >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        h = (h ^ (h >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        h = h ^ (h >> np.uint64(31))
    return (h % np.uint64(size)).astype(np.int64)
