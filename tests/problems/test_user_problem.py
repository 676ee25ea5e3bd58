"""UserProblem: a user's nn.Module batched with vmap, the one-run-at-a-time fallback, and bad input.

The oracle for the batched loss is the user's own module run alone (load_state_dict + forward);
for training, `engine.run_sequential` (the plain optarena.optim loop)."""

from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from optarena import engine
from optarena.problems.base import Problem, seed_generator
from optarena.problems.user import UserCodeError, UserProblem
from optarena.trial import Trial

STEPS = 12


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny models: intra-op threads only add synchronisation (and thrash on a busy machine)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def classification_data(n_train=48, n_val=24, features=4, classes=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n_train + n_val, features, generator=g)
    y = (x[:, 0] > 0).long() + (x[:, 1] > 0.5).long() * (classes - 2)
    return (x[:n_train], y[:n_train]), (x[n_train:], y[n_train:])


def regression_data(n_train=40, n_val=20, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n_train + n_val, 3, generator=g)
    y = x @ torch.tensor([1.0, -2.0, 0.5]) + 0.1 * torch.randn(n_train + n_val, generator=g)
    return (x[:n_train], y[:n_train]), (x[n_train:], y[n_train:])


def mlp():
    return nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 3))


class Gated(nn.Module):
    """Data-dependent control flow: vmap cannot serve it."""

    def __init__(self):
        super().__init__()
        self.hidden = nn.Linear(4, 8)
        self.out = nn.Linear(8, 3)

    def forward(self, x):
        h = self.hidden(x)
        h = torch.relu(h) if h.mean() > 0 else torch.tanh(h)
        return self.out(h)


def trials(problem, hparams=({"lr": 0.05},), optimizers=("adam", "momentum"), seeds=(1, 2)):
    return [Trial(problem.name, o, "article", h, s, STEPS) for o in optimizers for h in hparams for s in seeds]


def assert_same_runs(batched, alone, tol=1e-5):
    for a, b in zip(batched, alone):
        assert a.status == b.status == "done"
        assert a.curve["step"] == b.curve["step"]
        for k in a.final:
            assert a.curve[k] == pytest.approx(b.curve[k], abs=tol, rel=tol), k


def stacked(problem, step, seeds):
    parts = [problem.batch(step, seed_generator(s, "batches")) for s in seeds]
    return tuple(torch.stack(p) for p in zip(*parts))


# ---- the vmap path ----


def test_protocol_and_defaults():
    p = UserProblem(mlp, classification_data(), batch_size=8, steps=STEPS)
    assert isinstance(p, Problem)
    assert p.vmappable and not p.stochastic
    assert p.default_steps == STEPS and p.batch_size == 8
    assert p.name.startswith("user-")
    rows, noise = p.batch(0, seed_generator(0, "batches"))
    assert rows.shape == (8,) and rows.dtype == torch.long and noise.shape == (1,)
    metrics = p.evaluate(p.init_params(torch.tensor([0, 1])))
    assert set(metrics) == {"train_loss", "val_loss", "val_accuracy"}
    assert all(v.shape == (2,) for v in metrics.values())


def test_batched_loss_equals_the_module_alone():
    p = UserProblem(mlp, classification_data(), batch_size=8)
    seeds = [3, 5, 7]
    params = p.init_params(torch.tensor(seeds))
    batch = stacked(p, 4, seeds)
    losses = p.loss(params, batch)
    for r in range(len(seeds)):
        module = mlp()
        module.load_state_dict({k: v[r] for k, v in params.items()})
        rows = batch[0][r]
        expected = F.cross_entropy(module(p.x_train[rows]), p.y_train[rows])
        assert float(losses[r].detach()) == pytest.approx(float(expected.detach()), rel=1e-5, abs=1e-6)


def test_init_of_a_run_does_not_depend_on_its_batch_mates_and_keeps_global_rng():
    p = UserProblem(mlp, classification_data())
    state = torch.random.get_rng_state()
    alone = p.init_params(torch.tensor([3]))
    together = p.init_params(torch.tensor([1, 3, 5]))
    assert torch.equal(torch.random.get_rng_state(), state)
    for k in alone:
        assert torch.equal(alone[k][0], together[k][1])
    assert not torch.equal(together["0.weight"][0], together["0.weight"][1])


def test_engine_run_equals_run_sequential():
    p = UserProblem(mlp, classification_data(), batch_size=8, steps=STEPS)
    ts = trials(p, hparams=({"lr": 0.05}, {"lr": 0.01}))
    assert_same_runs(engine.run(p, ts), engine.run_sequential(p, ts))


def test_batchnorm_in_training_mode_is_vmapped_with_per_run_running_statistics():
    # With its buffers stacked per run, BatchNorm's in-place running-statistics update works under
    # vmap (torch 2.4+); the construction check confirms it against one model at a time.
    model = lambda: nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 3))
    p = UserProblem(model, classification_data(), batch_size=8, steps=STEPS)
    assert p.vmappable
    params = p.init_params(torch.tensor([1, 2]))
    p.loss(params, stacked(p, 0, [1, 2]))
    running_mean = p._buffers(params)["1.running_mean"]
    assert not torch.equal(running_mean[0], running_mean[1])  # each run its own statistics
    assert_same_runs(engine.run(p, trials(p)), engine.run_sequential(p, trials(p)))


def test_dropout_runs_equal_the_same_runs_alone():
    model = lambda: nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Dropout(0.3), nn.Linear(16, 3))
    p = UserProblem(model, classification_data(), batch_size=8, steps=STEPS)
    assert p.vmappable and p.stochastic
    ts = trials(p, seeds=(1, 2, 3))
    assert_same_runs(engine.run(p, ts), engine.run_sequential(p, ts))


def test_default_mse_matches_a_column_output_to_flat_targets():
    model = lambda: nn.Linear(3, 1)
    p = UserProblem(model, regression_data(), batch_size=8, steps=STEPS)
    assert "val_accuracy" not in p.evaluate(p.init_params(torch.tensor([0])))
    params = p.init_params(torch.tensor([0]))
    module = model()
    module.load_state_dict({k: v[0] for k, v in params.items()})
    expected = F.mse_loss(module(p.x_val).squeeze(1), p.y_val)
    assert float(p.evaluate(params)["val_loss"][0]) == pytest.approx(float(expected.detach()), rel=1e-5)


def test_a_dataset_gives_the_same_problem_as_tensors():
    (xt, yt), (xv, yv) = classification_data()
    from_tensors = UserProblem(mlp, ((xt, yt), (xv, yv)))
    datasets = (torch.utils.data.TensorDataset(xt, yt), torch.utils.data.TensorDataset(xv, yv))
    from_datasets = UserProblem(mlp, lambda: datasets)
    assert from_datasets.name == from_tensors.name
    assert torch.equal(from_datasets.x_train, xt) and torch.equal(from_datasets.y_val, yv)


def test_the_name_changes_with_the_data_and_the_model():
    base = UserProblem(mlp, classification_data())
    assert UserProblem(mlp, classification_data()).name == base.name
    assert UserProblem(mlp, classification_data(seed=1)).name != base.name
    other = lambda: nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))
    assert UserProblem(other, classification_data()).name != base.name


def test_loss_bound_is_a_hundred_times_the_initial_loss():
    p = UserProblem(mlp, classification_data())
    module = p._build(0)
    with torch.no_grad():
        initial = float(F.cross_entropy(module(p.x_train), p.y_train))
    assert p.loss_bound == pytest.approx(100 * initial + 1, rel=1e-5)


# ---- the fallback ----


def test_fallback_warns_once_and_matches_sequential():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        p = UserProblem(Gated, classification_data(), batch_size=8, steps=STEPS)
        ts = trials(p)
        batched = engine.run(p, ts)
    messages = [str(w.message) for w in caught if "falling back to one run at a time" in str(w.message)]
    assert len(messages) == 1 and "control flow" in messages[0]
    assert not p.vmappable and "control flow" in p.fallback_reason
    assert_same_runs(batched, engine.run_sequential(p, ts))
    assert batched[0].final["val_loss"] < batched[0].curve["val_loss"][0]  # it trains


# ---- run-time failure and divergence ----


def test_a_forward_that_raises_at_run_time_fails_its_stack_with_the_traceback():
    calls = [0]
    limit = [10**9]

    class Flaky(nn.Module):
        def __init__(self):
            super().__init__()
            self.layer = nn.Linear(4, 3)

        def forward(self, x):
            calls[0] += 1
            if calls[0] > limit[0]:
                raise RuntimeError("the user's model broke")
            return self.layer(x)

    p = UserProblem(Flaky, classification_data(), batch_size=8, steps=STEPS)
    limit[0] = calls[0] + 5
    results = engine.run(p, trials(p))
    assert {r.status for r in results} == {"failed"}
    assert "the user's model broke" in results[0].error and "Traceback" in results[0].error


def test_a_huge_learning_rate_diverges_alone():
    p = UserProblem(lambda: nn.Linear(3, 1), regression_data(), batch_size=8, steps=STEPS)
    ts = [Trial(p.name, "sgd", "article", {"lr": lr}, 1, STEPS) for lr in (1e-2, 50.0)]
    ok, blown = engine.run(p, ts)
    assert ok.status == "done" and blown.status == "diverged" and blown.diverged_at is not None


# ---- bad input ----


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"model_fn": mlp()}, "function that returns a fresh nn.Module"),
        ({"model_fn": lambda: 1 / 0}, "model() raised ZeroDivisionError"),
        ({"model_fn": lambda: "not a module"}, "model() must return a torch.nn.Module"),
        ({"data": (1, 2, 3)}, "data() must return (train, val)"),
        ({"data": lambda: 1 / 0}, "data() raised ZeroDivisionError"),
        ({"data": ((torch.randn(5, 4), torch.zeros(4).long()), (torch.randn(2, 4), torch.zeros(2).long()))}, "same number of rows"),
        ({"model_fn": lambda: nn.Linear(5, 3)}, "model(X) raised RuntimeError"),
        ({"model_fn": lambda: nn.Linear(4, 2)}, "labels run from 0 to 2 but the model outputs 2 classes"),
        ({"loss": lambda out, y: F.cross_entropy(out, y, reduction="none")}, "must return a scalar Tensor"),
        ({"loss": lambda out, y: out.sum() / 0.0 * 0.0}, "is nan for the initial model"),
    ],
)
def test_bad_input_names_the_function_and_the_cause(kwargs, needle):
    args = {"model_fn": mlp, "data": classification_data(), **kwargs}
    with pytest.raises(UserCodeError) as info:
        UserProblem(args.pop("model_fn"), args.pop("data"), **args)
    assert needle in str(info.value)


def test_mismatched_mse_shapes_are_caught_before_training():
    (xt, yt), (xv, yv) = regression_data()
    two_targets = ((xt, torch.stack([yt, yt], 1)), (xv, torch.stack([yv, yv], 1)))
    with pytest.raises(UserCodeError, match=r"output shape \(40, 3\) does not match the target shape \(40, 2\): mean squared error"):
        UserProblem(lambda: nn.Linear(3, 3), two_targets)
    # a user's mse_loss that would broadcast (B, 1) against (B,) silently
    with pytest.raises(UserCodeError, match=r"loss\(output, target\) raised UserWarning.*target size"):
        UserProblem(lambda: nn.Linear(3, 1), regression_data(), loss=F.mse_loss)
