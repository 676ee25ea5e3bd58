"""Runners for claim R8's methods on ``sparse_ctr`` that the batched (dense) engine cannot run: sparse
updates and other libraries' solvers, one run at a time, registered with ``optarena.runners`` so the
one study executor (and every backend) runs them like engine trials and stores ordinary RunResults.

Optimizer names (their ``Trial.hparams`` carry ``n_train``, the prefix of the training split used):

- ``sparse_ftrl``: optarena's FTRL-Proximal (McMahan et al. 2013) on a weight table with sparse
  gradients (``F.embedding(..., sparse=True)``); the bias is not penalised;
- ``sparse_adagrad``: optarena's AdaGrad on the same sparse table (no L1);
- ``sklearn_sgd_l1``: scikit-learn's SGDClassifier(loss="log_loss", penalty="l1", invscaling) on the
  CSR matrix, ``partial_fit`` over the same data order;
- ``keras_ftrl``: Keras 3's Ftrl (KERAS_BACKEND=torch; dense gradients, its torch backend has no
  sparse updates), with Keras's hyperparameter names.

The minibatch loss is the SUM of the examples' log losses: the gradient of a feature is then what
per-example online learning sees, so FTRL's beta and l1 keep the paper's per-example scale. One pass
over the prefix in minibatches of ``BATCH``, data order shuffled per seed; final metrics val_loss
(held-out log loss), auc, nonzero, nonzero_share, train_seconds.
"""

from __future__ import annotations

import math
import os
import sys
import time
import traceback

import numpy as np

from optarena import runners
from optarena.trial import RunResult, Trial

BATCH = 128
METHODS = ("sparse_ftrl", "sparse_adagrad", "sklearn_sgd_l1", "keras_ftrl")
OPTIM = {"sparse_ftrl": "ftrl", "sparse_adagrad": "adagrad"}


def steps_for(n_train: int, epochs: int = 1) -> int:
    return epochs * math.ceil(n_train / BATCH)


def _metrics(logits: np.ndarray, labels: np.ndarray, nonzero: int, n_features: int) -> dict[str, float]:
    from sklearn.metrics import roc_auc_score

    z = np.asarray(logits, dtype=np.float64)
    y = np.asarray(labels, dtype=np.float64)
    val_loss = float(np.mean(np.logaddexp(0.0, z) - y * z))
    auc = float(roc_auc_score(y, z)) if np.all(np.isfinite(z)) else math.nan
    return {"val_loss": val_loss, "auc": auc, "nonzero": float(nonzero), "nonzero_share": nonzero / n_features}


def _keras():
    """Keras 3 on the torch backend (the backend is fixed when keras is first imported)."""
    if "keras" not in sys.modules:
        os.environ.setdefault("KERAS_BACKEND", "torch")
    import keras

    if keras.backend.backend() != "torch":
        raise RuntimeError(f"keras was imported with backend {keras.backend.backend()!r}; R8 needs KERAS_BACKEND=torch")
    return keras


def _batches(n_train: int, epochs: int, seed: int):
    import torch

    from optarena.problems.base import seed_generator

    generator = seed_generator(seed, "batches")
    for _ in range(epochs):
        order = torch.randperm(n_train, generator=generator)
        for start in range(0, n_train, BATCH):
            yield order[start:start + BATCH]


def _train_torch(problem, t: Trial, n_train: int, epochs: int, device: str) -> dict[str, float]:
    import torch
    import torch.nn.functional as F

    from optarena import optim

    x, y = (a[:n_train].to(device) for a in problem.train_data())
    w = torch.zeros(problem.n_features, 1, device=device, requires_grad=True)
    b = torch.zeros(1, device=device, requires_grad=True)
    # The bias is not penalised (one dense coordinate; McMahan et al. leave it unregularised too).
    hparams = _hparams(t)
    if t.optimizer == "sparse_ftrl":
        opt = optim.create("ftrl", [{"params": [w]}, {"params": [b], "l1": 0.0}], t.convention, **hparams)
    else:
        opt = optim.create(OPTIM[t.optimizer], [w, b], t.convention, **hparams)
    for rows in _batches(n_train, epochs, t.seed):
        rows = rows.to(device)
        logits = F.embedding(x[rows], w, sparse=True).sum((1, 2)) + b
        loss = F.binary_cross_entropy_with_logits(logits, y[rows], reduction="sum")
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        xv, yv = problem.val_data()
        logits = w[xv.to(device)].sum((1, 2)) + b
        nonzero = int((w != 0).sum())
    return _metrics(logits.cpu().numpy(), yv.cpu().numpy(), nonzero, problem.n_features)


def _train_keras(problem, t: Trial, n_train: int, epochs: int) -> dict[str, float]:
    import torch
    import torch.nn.functional as F

    keras = _keras()
    h = _hparams(t)
    w = keras.Variable(np.zeros((problem.n_features, 1), dtype="float32"))
    b = keras.Variable(np.zeros((1,), dtype="float32"))

    def ftrl(l1: float):
        return keras.optimizers.Ftrl(
            learning_rate=h["learning_rate"], learning_rate_power=h["learning_rate_power"],
            initial_accumulator_value=h["initial_accumulator_value"], l1_regularization_strength=l1,
            l2_regularization_strength=h["l2_regularization_strength"], beta=h["beta"],
        )

    opt_w, opt_b = ftrl(h["l1_regularization_strength"]), ftrl(0.0)
    x, y = problem.train_data()
    device = w.value.device
    x, y = x[:n_train].to(device), y[:n_train].to(device)
    for rows in _batches(n_train, epochs, t.seed):
        rows = rows.to(device)
        wv, bv = w.value, b.value
        logits = F.embedding(x[rows], wv).sum((1, 2)) + bv
        loss = F.binary_cross_entropy_with_logits(logits, y[rows], reduction="sum")
        gw, gb = torch.autograd.grad(loss, [wv, bv])  # dense: Keras's torch backend has no sparse updates
        opt_w.apply_gradients([(gw, w)])
        opt_b.apply_gradients([(gb, b)])
    with torch.no_grad():
        weights = w.value.detach().cpu().view(-1)
        bias = float(b.value.detach().cpu().view(-1)[0])
    xv, yv = problem.val_data()
    logits = weights[xv.cpu()].sum(1) + bias
    return _metrics(logits.numpy(), yv.cpu().numpy(), int((weights != 0).sum()), problem.n_features)


def _train_sklearn(problem, t: Trial, n_train: int, epochs: int) -> dict[str, float]:
    from sklearn.linear_model import SGDClassifier

    h = _hparams(t)
    x, y = problem.train_data()
    matrix = problem.to_scipy_csr(x[:n_train])
    labels = y[:n_train].cpu().numpy()
    # The data order of this seed (as for the other methods); sklearn itself does not shuffle again.
    model = SGDClassifier(loss="log_loss", penalty="l1", alpha=h["alpha"], learning_rate="invscaling",
                          eta0=h["eta0"], power_t=h["power_t"], shuffle=False, random_state=int(t.seed))
    order = np.concatenate([rows.numpy() for rows in _batches(n_train, epochs, t.seed)])
    for epoch in range(epochs):
        rows = order[epoch * n_train:(epoch + 1) * n_train]
        model.partial_fit(matrix[rows], labels[rows], classes=np.array([0.0, 1.0]))
    xv, yv = problem.val_data()
    logits = model.decision_function(problem.to_scipy_csr(xv))
    return _metrics(logits, yv.cpu().numpy(), int(np.count_nonzero(model.coef_)), problem.n_features)


def _hparams(t: Trial) -> dict[str, float]:
    """The method's own hyperparameters (``n_train`` removed)."""
    return {k: v for k, v in t.hparams.items() if k != "n_train"}


def train(problem, t: Trial, device: str = "cpu") -> RunResult:
    """One run as a RunResult: done (finite log loss), diverged, or failed (with the traceback)."""
    started = time.perf_counter()
    epochs = 1
    try:
        if "n_train" not in t.hparams:
            raise ValueError(f"{t.optimizer} trials carry n_train (the training examples used) in their hparams")
        n_train = min(int(t.hparams["n_train"]), problem.n_train)
        if t.steps != steps_for(n_train, epochs):
            raise ValueError(f"trial has {t.steps} steps, but {n_train} examples x {epochs} passes make {steps_for(n_train, epochs)}")
        if t.optimizer in OPTIM:
            final = _train_torch(problem, t, n_train, epochs, device)
        elif t.optimizer == "keras_ftrl":
            final = _train_keras(problem, t, n_train, epochs)
        elif t.optimizer == "sklearn_sgd_l1":
            final = _train_sklearn(problem, t, n_train, epochs)
        else:
            raise ValueError(f"R8 has no method {t.optimizer!r}; its methods: {', '.join(METHODS)}")
    except Exception:
        return RunResult(t, "failed", error=traceback.format_exc(), wall_time=time.perf_counter() - started)
    final["n_train"] = float(n_train)
    wall = time.perf_counter() - started
    final["train_seconds"] = wall
    curve = {"step": [0.0, float(t.steps)], "val_loss": [math.log(2.0), final["val_loss"]]}
    if not math.isfinite(final["val_loss"]):
        return RunResult(t, "diverged", curve, {**final, "val_loss": math.inf}, wall, diverged_at=t.steps)
    return RunResult(t, "done", curve, final, wall)




def run_batch(problem, trials: list[Trial], device: str = "cpu") -> list[RunResult]:
    """The registered runner: each trial trained on its own, in order."""
    if not hasattr(problem, "to_scipy_csr"):
        raise ValueError(f"{', '.join(METHODS)} run on the sparse problems, not on {getattr(problem, 'name', problem)!r}")
    return [train(problem, t, device) for t in trials]


runners.register(METHODS, run_batch)
