"""The engine on problems with sparse features (``restrict``): the loss differentiated on the
columns a minibatch reaches, only those columns updated for rules that leave zero-gradient
coordinates alone, and large updates applied a block of runs at a time. Each is an execution
choice: the numbers must be those of autograd on the whole parameters, updated at once."""

from __future__ import annotations

import pytest
from optarena import engine, rules
from optarena.problems.sparse import SparseZipf
from optarena.trial import Trial

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py

STEPS = 60


class Dense:
    """The same problem without ``restrict``: the engine takes autograd's dense gradient."""

    def __init__(self, problem) -> None:
        self._problem = problem

    def __getattr__(self, name):
        if name == "restrict":
            raise AttributeError(name)
        return getattr(self._problem, name)


@pytest.fixture(scope="module")
def zipf():
    return SparseZipf(n_features=3000, active_features=8, n_train=1500, n_val=300, batch_size=32)


def trials(optimizer: str, convention: str, **extra) -> list[Trial]:
    lr = rules.defaults(optimizer, convention)["lr"]
    return [Trial("sparse_zipf", optimizer, convention, {"lr": lr * f, **extra}, seed, STEPS)
            for f in (1.0, 3.0) for seed in (0, 1, 2)]


def assert_same(a, b) -> None:
    for x, y in zip(a, b):
        assert x.status == y.status == "done"
        for k in x.curve:
            assert x.curve[k] == y.curve[k], (x.trial, k)


LAZY = [("adagrad", c) for c in ("article", "pytorch", "keras")] + [("ftrl", c) for c in ("article", "keras")]
DENSE = [("sgd", "article"), ("momentum", "pytorch"), ("adam", "article"), ("rmsprop", "keras"), ("adadelta", "pytorch")]


@pytest.mark.parametrize("optimizer,convention", LAZY + DENSE)
def test_restricted_gradient_gives_the_dense_numbers(zipf, optimizer, convention):
    ts = trials(optimizer, convention)
    assert_same(engine.run(zipf, ts), engine.run(Dense(zipf), ts))


def test_only_rules_that_leave_zero_rows_are_updated_lazily(zipf, monkeypatch):
    calls = []
    original = engine._SparseGradient.update_
    monkeypatch.setattr(engine._SparseGradient, "update_", lambda self, *a: calls.append(1) or original(self, *a))
    engine.run(zipf, trials("adagrad", "article"))
    assert len(calls) == STEPS
    calls.clear()
    # weight decay reaches every coordinate, a trace needs the whole gradient: the dense buffer
    wd = trials("adagrad", "pytorch", weight_decay=1e-3)
    assert_same(engine.run(zipf, wd), engine.run(Dense(zipf), wd))
    traced = engine.run(zipf, trials("ftrl", "article"), trace=("grad_norm",))
    dense = engine.run(Dense(zipf), trials("ftrl", "article"), trace=("grad_norm",))
    assert calls == []
    assert_same(traced, dense)
    for x, y in zip(traced, dense):
        assert x.trace["grad_norm"] == y.trace["grad_norm"]


def test_a_mixed_stack_takes_the_dense_buffer_for_all(zipf):
    ts = trials("adagrad", "article") + trials("adam", "article")
    assert_same(engine.run(zipf, ts), engine.run(Dense(zipf), ts))


def test_clipping_on_a_sparse_problem(zipf):
    ts = [Trial("sparse_zipf", "adagrad", "article", {"lr": 0.5}, s, STEPS, clip_grad_norm=0.05) for s in range(3)]
    assert_same(engine.run(zipf, ts), engine.run(Dense(zipf), ts))


def test_restrict_must_cover_every_parameter(zipf):
    class Partial(Dense):
        def restrict(self, batch):
            return {}, batch

    [r] = engine.run(Partial(zipf), trials("adagrad", "article")[:1])
    assert r.status == "failed" and "restrict must give columns for every parameter" in r.error


@pytest.mark.parametrize("optimizer", ["sgd", "momentum", "adagrad", "rmsprop", "adam", "adadelta", "nadam", "adamw",
                                       "lion", "lamb", "adafactor", "schedulefree_adamw"])
def test_updates_in_blocks_of_runs_equal_one_update(zipf, optimizer, monkeypatch):
    """With a block of one run, every run's update is applied on its own; per-run hyperparameters
    and state are sliced with it. Bitwise equal (torch 2.13 CPU): elementwise rules see each run's
    row as before."""
    from optarena.problems.vision import DigitsMLP

    problem = DigitsMLP()
    convention = "pytorch" if rules.has_convention(optimizer, "pytorch") else next(iter(rules.entry(optimizer).conventions))
    lr = rules.defaults(optimizer, convention)["lr"]
    ts = [Trial("digits_mlp", optimizer, convention, {"lr": lr * f}, s, 30) for f in (0.5, 1.0) for s in (0, 1)]
    whole = engine.run(problem, ts)
    monkeypatch.setattr(engine, "UPDATE_BLOCK_BYTES", 1)
    blocks = engine.run(problem, ts)
    for x, y in zip(whole, blocks):
        assert x.status == y.status
        for k in x.curve:
            assert x.curve[k] == y.curve[k], (x.trial, k)
