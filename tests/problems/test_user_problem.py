"""UserProblem: a user's nn.Module batched with vmap, the one-run-at-a-time fallback, and bad input.

The oracle for the batched loss is the user's own module run alone (load_state_dict + forward);
for training, `loop.run_sequential` (the plain optarena.optim loop)."""

from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from optarena import engine, loop
from optarena.problems.base import Problem, seed_generator
from optarena.problems.user import UserCodeError, UserProblem
from optarena.trial import Trial

STEPS = 12


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


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
    assert_same_runs(engine.run(p, ts), loop.run_sequential(p, ts))


def test_batchnorm_in_training_mode_is_vmapped_with_per_run_running_statistics():
    # With its buffers stacked per run, BatchNorm's in-place running-statistics update works under
    # vmap (torch 2.4+); the construction check confirms it against one model at a time.
    model = lambda: nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 3))
    p = UserProblem(model, classification_data(), batch_size=8, steps=STEPS)
    assert p.vmappable
    params = p.init_params(torch.tensor([1, 2]))
    buffers = p.init_buffers(torch.tensor([1, 2]))
    p.loss(params, stacked(p, 0, [1, 2]), buffers=buffers)
    running_mean = buffers["1.running_mean"]
    assert not torch.equal(running_mean[0], running_mean[1])  # each run its own statistics
    assert_same_runs(engine.run(p, trials(p)), loop.run_sequential(p, trials(p)))


def test_dropout_runs_equal_the_same_runs_alone():
    # Keyed dropout: one vmap serves runs of every seed (not one vmap per seed).
    model = lambda: nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Dropout(0.3), nn.Linear(16, 3))
    p = UserProblem(model, classification_data(), batch_size=8, steps=STEPS)
    assert p.vmappable and not p.stochastic
    ts = trials(p, seeds=(1, 2, 3))
    assert_same_runs(engine.run(p, ts), loop.run_sequential(p, ts))


def test_dropout_masks_depend_on_the_noise_key_alone():
    model = lambda: nn.Sequential(nn.Linear(4, 64), nn.ReLU(), nn.Dropout(0.5), nn.Linear(64, 3))
    p = UserProblem(model, classification_data(), batch_size=8)
    params = p.init_params(torch.tensor([1, 1, 1]))  # three copies of one model
    rows = torch.arange(8).expand(3, 8).clone()
    noise = torch.tensor([[5], [6], [5]])
    losses = p.loss(params, (rows, noise)).detach()
    assert losses[0] == losses[2] and losses[0] != losses[1]
    # and the masks keep about half of the units, scaled by 1 / (1 - p)
    from optarena.problems.user_ops import BatchableOps

    with BatchableOps(torch.tensor(5)) as ops:
        kept = F.dropout(torch.ones(100_000), 0.5)
    assert set(kept.unique().tolist()) == {0.0, 2.0} and abs(float(kept.mean()) - 1.0) < 0.02
    assert ops.drew


def test_draws_from_the_global_rng_group_runs_by_seed():
    class Noisy(nn.Module):
        def __init__(self):
            super().__init__()
            self.body = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 3))

        def forward(self, x):
            return self.body(x + 0.1 * torch.randn_like(x) if self.training else x)

    p = UserProblem(Noisy, classification_data(), batch_size=8, steps=STEPS)
    assert p.vmappable and p.stochastic
    ts = trials(p, seeds=(1, 2))
    assert_same_runs(engine.run(p, ts), loop.run_sequential(p, ts))


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
    assert_same_runs(batched, loop.run_sequential(p, ts))
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


# ---- the models people write: outputs, inputs, layers ----
# Each: the batched runs (engine.run) equal the same runs one at a time (loop.run_sequential);
# where a stand-in op replaces torch's kernel, its loss is also checked against the user's module
# run alone in plain torch.


def token_data(n_train=48, n_val=24, length=6, vocabulary=20, seed=0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, vocabulary, (n_train + n_val, length), generator=g)
    y = (ids[:, 0] > vocabulary // 2).long() + (ids[:, -1] > vocabulary // 2).long()
    return (ids[:n_train], y[:n_train]), (ids[n_train:], y[n_train:])


def two_input_data(n_train=48, n_val=24, seed=0):
    (a_train, y_train), (a_val, y_val) = classification_data(n_train, n_val, seed=seed)
    g = torch.Generator().manual_seed(seed + 1)
    b_train, b_val = torch.randn(n_train, 2, generator=g), torch.randn(n_val, 2, generator=g)
    return ((a_train, b_train), y_train), ((a_val, b_val), y_val)


class DictHead(nn.Module):
    """Hugging Face style: a dict whose first entry is not the logits."""

    def __init__(self):
        super().__init__()
        self.hidden = nn.Linear(4, 8)
        self.out = nn.Linear(8, 3)

    def forward(self, x):
        h = torch.tanh(self.hidden(x))
        return {"hidden_states": h, "logits": self.out(h)}


class TupleHead(nn.Module):
    def __init__(self):
        super().__init__()
        self.hidden = nn.Linear(4, 8)
        self.out = nn.Linear(8, 3)

    def forward(self, x):
        h = torch.tanh(self.hidden(x))
        return self.out(h), h


class TwoInputs(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Linear(4, 8)
        self.b = nn.Linear(2, 8)
        self.out = nn.Linear(8, 3)

    def forward(self, a, b):
        return self.out(torch.tanh(self.a(a) + self.b(b)))


class KeywordInputs(nn.Module):
    def __init__(self):
        super().__init__()
        self.words = nn.Embedding(20, 8)
        self.numbers = nn.Linear(2, 8)
        self.out = nn.Linear(8, 3)

    def forward(self, ids, numbers):
        return self.out(torch.tanh(self.words(ids).mean(1) + self.numbers(numbers)))


class Classifier(nn.Module):
    """Embedding -> TransformerEncoder (2 layers) / GRU / sparse embedding bag -> linear head."""

    def __init__(self, kind, dropout=0.0):
        super().__init__()
        self.kind = kind
        self.embed = nn.Embedding(20, 8, sparse=kind == "sparse")
        if kind == "transformer":
            layer = nn.TransformerEncoderLayer(8, 2, 16, dropout=dropout, batch_first=True)
            self.encoder = nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)
        elif kind == "gru":
            self.encoder = nn.GRU(8, 8, batch_first=True)
        self.head = nn.Linear(8, 3)

    def forward(self, ids):
        h = self.embed(ids)
        if self.kind == "transformer":
            h = self.encoder(h).mean(1)
        elif self.kind == "gru":
            h = self.encoder(h)[1][0]
        else:
            h = h.mean(1)
        return self.head(h)


def assert_loss_equals_the_module_alone(p, make, seeds=(3, 5), tol=1e-5, logits=lambda output: output):
    """p.loss of each run equals cross-entropy of the user's module (load_state_dict) run alone in
    plain torch, on `logits(output)`."""
    params = p.init_params(torch.tensor(seeds))
    batch = stacked(p, 2, seeds)
    losses = p.loss(params, batch).detach()
    for r in range(len(seeds)):
        module = make().train()
        module.load_state_dict({k: v[r] for k, v in params.items()})
        rows = batch[0][r]
        expected = F.cross_entropy(logits(module(p.x_train[rows])), p.y_train[rows])
        assert float(losses[r]) == pytest.approx(float(expected.detach()), rel=tol, abs=tol)


def test_a_dict_output_reaches_the_loss_whole_and_the_default_reads_logits():
    p = UserProblem(DictHead, classification_data(), batch_size=8, steps=STEPS)
    assert p.vmappable and p.has_accuracy
    assert_loss_equals_the_module_alone(p, DictHead, logits=lambda out: out["logits"])  # not the first entry
    ts = trials(p)
    assert_same_runs(engine.run(p, ts), loop.run_sequential(p, ts))

    seen = []

    def loss(output, target):
        seen.append(sorted(output))
        return F.cross_entropy(output["logits"], target) + 0.1 * output["hidden_states"].square().mean()

    q = UserProblem(DictHead, classification_data(), loss=loss, batch_size=8, steps=STEPS)
    assert seen[0] == ["hidden_states", "logits"] and q.vmappable
    params = q.init_params(torch.tensor([4]))
    module = DictHead()
    module.load_state_dict({k: v[0] for k, v in params.items()})
    with torch.no_grad():
        out = module(q.x_val)
        expected = F.cross_entropy(out["logits"], q.y_val) + 0.1 * out["hidden_states"].square().mean()
        accuracy = (out["logits"].argmax(1) == q.y_val).double().mean()
    metrics = q.evaluate(params)
    assert float(metrics["val_loss"][0]) == pytest.approx(float(expected), rel=1e-5)
    assert float(metrics["val_accuracy"][0]) == pytest.approx(float(accuracy), abs=1e-6)


def test_a_tuple_output_is_batched_and_the_default_reads_its_first_element():
    p = UserProblem(TupleHead, classification_data(), batch_size=8, steps=STEPS)
    assert p.vmappable
    assert_loss_equals_the_module_alone(p, TupleHead, logits=lambda out: out[0])
    ts = trials(p)
    assert_same_runs(engine.run(p, ts), loop.run_sequential(p, ts))


def test_a_tuple_input_calls_model_with_each_tensor():
    p = UserProblem(TwoInputs, two_input_data(), batch_size=8, steps=STEPS)
    assert p.vmappable and isinstance(p.x_train, tuple) and p.n_train == 48
    params = p.init_params(torch.tensor([2]))
    module = TwoInputs()
    module.load_state_dict({k: v[0] for k, v in params.items()})
    with torch.no_grad():
        expected = F.cross_entropy(module(*p.x_val), p.y_val)
    assert float(p.evaluate(params)["val_loss"][0]) == pytest.approx(float(expected), rel=1e-5)
    ts = trials(p)
    assert_same_runs(engine.run(p, ts), loop.run_sequential(p, ts))


def test_a_dict_input_calls_model_with_keywords():
    (ids_train, y_train), (ids_val, y_val) = token_data()
    g = torch.Generator().manual_seed(3)
    data = (({"ids": ids_train, "numbers": torch.randn(48, 2, generator=g)}, y_train),
            ({"ids": ids_val, "numbers": torch.randn(24, 2, generator=g)}, y_val))
    p = UserProblem(KeywordInputs, data, batch_size=8, steps=STEPS)
    assert p.vmappable and set(p.x_train) == {"ids", "numbers"} and p.x_train["ids"].dtype == torch.long
    ts = trials(p)
    assert_same_runs(engine.run(p, ts), loop.run_sequential(p, ts))


class PairDataset(torch.utils.data.Dataset):
    def __init__(self, split):
        (self.a, self.b), self.y = split

    def __len__(self):
        return len(self.y)

    def __getitem__(self, i):
        return (self.a[i].numpy(), self.b[i]), int(self.y[i])


def test_a_dataset_of_tuple_inputs_gives_the_same_problem_as_tensors():
    train, val = two_input_data()
    from_tensors = UserProblem(TwoInputs, (train, val), batch_size=8, steps=STEPS)
    from_dataset = UserProblem(TwoInputs, lambda: (PairDataset(train), PairDataset(val)), batch_size=8, steps=STEPS)
    assert from_dataset.name == from_tensors.name and from_dataset.vmappable
    assert torch.equal(from_dataset.x_train[0], train[0][0]) and torch.equal(from_dataset.x_val[1], val[0][1])
    ts = trials(from_dataset)
    assert_same_runs(engine.run(from_dataset, ts), loop.run_sequential(from_dataset, ts))


def test_a_transformer_encoder_without_dropout_is_batched_and_equals_torch():
    make = lambda: Classifier("transformer", dropout=0.0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no fallback, no "performance drop" warning from vmap
        p = UserProblem(make, token_data(), batch_size=8, steps=STEPS)
    assert p.vmappable and not p.stochastic
    assert_loss_equals_the_module_alone(p, make)  # our attention equals torch's fused kernel
    ts = trials(p)
    assert_same_runs(engine.run(p, ts), loop.run_sequential(p, ts), tol=1e-4)


def test_a_transformer_encoder_with_dropout_is_batched_and_equals_the_runs_alone():
    p = UserProblem(lambda: Classifier("transformer", dropout=0.1), token_data(), batch_size=8, steps=STEPS)
    assert p.vmappable and not p.stochastic
    ts = trials(p)
    assert_same_runs(engine.run(p, ts), loop.run_sequential(p, ts), tol=1e-4)


def test_a_gru_is_batched_and_equals_torch():
    make = lambda: Classifier("gru")
    p = UserProblem(make, token_data(), batch_size=8, steps=STEPS)
    assert p.vmappable, p.fallback_reason
    assert_loss_equals_the_module_alone(p, make)  # the written-out recurrence equals torch's kernel
    ts = trials(p)
    assert_same_runs(engine.run(p, ts), loop.run_sequential(p, ts), tol=1e-4)


@pytest.mark.parametrize("kind", ["lstm", "bidirectional-gru"])
def test_other_recurrent_layers_equal_torch(kind):
    class Recurrent(nn.Module):
        def __init__(self):
            super().__init__()
            self.rnn = (nn.LSTM(4, 6, num_layers=2, batch_first=True) if kind == "lstm"
                        else nn.GRU(4, 6, batch_first=True, bidirectional=True))
            self.head = nn.Linear(6 if kind == "lstm" else 12, 3)

        def forward(self, x):
            return self.head(self.rnn(x)[0][:, -1])

    g = torch.Generator().manual_seed(0)
    x = torch.randn(40, 5, 4, generator=g)
    y = (x[:, :, 0].sum(1) > 0).long()
    p = UserProblem(Recurrent, ((x[:30], y[:30]), (x[30:], y[30:])), batch_size=8)
    assert p.vmappable, p.fallback_reason
    assert_loss_equals_the_module_alone(p, Recurrent)


def test_a_sparse_embedding_is_batched_with_dense_gradients():
    sparse = UserProblem(lambda: Classifier("sparse"), token_data(), batch_size=8, steps=STEPS)
    dense = UserProblem(lambda: Classifier("dense"), token_data(), batch_size=8, steps=STEPS)
    assert sparse.vmappable
    ts = trials(sparse, optimizers=("adagrad", "sgd"))
    batched = engine.run(sparse, ts)
    assert_same_runs(batched, loop.run_sequential(sparse, ts))
    assert_same_runs(batched, loop.run_sequential(dense, trials(dense, optimizers=("adagrad", "sgd"))))

    # The oracle: the user's sparse module in a plain torch loop (real sparse gradients, torch's SGD).
    sgd = [r for r in batched if r.trial.optimizer == "sgd"][0]
    module = sparse._build(sgd.trial.seed)
    opt = torch.optim.SGD(module.parameters(), lr=sgd.trial.hparams["lr"])
    generator = seed_generator(sgd.trial.seed, "batches")
    for step in range(STEPS):
        rows, _ = sparse.batch(step, generator)
        opt.zero_grad()
        F.cross_entropy(module(sparse.x_train[rows]), sparse.y_train[rows]).backward()
        assert module.embed.weight.grad.is_sparse
        opt.step()
    with torch.no_grad():
        expected = F.cross_entropy(module.eval()(sparse.x_val), sparse.y_val)
    assert sgd.final["val_loss"] == pytest.approx(float(expected), rel=1e-5)


# ---- the fallback names the layer ----


class Normalise(nn.Module):
    def forward(self, x):
        return x / x.abs().max().item()


class Peeking(nn.Module):
    """Behaves differently under vmap (a stand-in for an op whose batching rule is wrong)."""

    def forward(self, x):
        return 2 * x if torch._C._functorch.is_batchedtensor(x) else x


@pytest.mark.parametrize(("layer", "needle"), [
    (Normalise, "Normalise at 1 is not vmappable: RuntimeError"),
    (Peeking, "the vmapped output of Peeking at 1 differs from its output run alone"),
])
def test_the_fallback_warning_names_the_layer(layer, needle):
    model = lambda: nn.Sequential(nn.Linear(4, 8), layer(), nn.Linear(8, 3))
    with pytest.warns(RuntimeWarning, match="falling back to one run at a time") as caught:
        p = UserProblem(model, classification_data(), batch_size=8, steps=STEPS)
    assert not p.vmappable and needle in p.fallback_reason
    assert any(needle in str(w.message) for w in caught)


class PackedGRU(nn.Module):
    """A GRU on a packed sequence: the fused kernel, which vmap cannot batch."""

    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(20, 8)
        self.rnn = nn.GRU(8, 8, batch_first=True)
        self.head = nn.Linear(8, 3)

    def forward(self, ids):
        lengths = [ids.shape[1]] * ids.shape[0]
        packed = nn.utils.rnn.pack_padded_sequence(self.embed(ids), lengths, batch_first=True)
        return self.head(self.rnn(packed)[1][0])


class UnreproducibleAttention(nn.MultiheadAttention):
    """Attention whose training-mode output differs under vmap, as torch's fused attention dropout did."""

    def forward(self, *args, **kwargs):
        out, weights = super().forward(*args, **kwargs)
        return (2 * out if self.training and torch._C._functorch.is_batchedtensor(out) else out), weights


class Attending(nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(20, 8)
        self.attention = UnreproducibleAttention(8, 2, dropout=0.1, batch_first=True)
        self.head = nn.Linear(8, 3)

    def forward(self, ids):
        h = self.embed(ids)
        return self.head(self.attention(h, h, h)[0].mean(1))


@pytest.mark.parametrize(("model", "needle"), [
    (PackedGRU, "nn.GRU at rnn is not vmappable: RuntimeError"),
    (Attending, "attention dropout in attention: the vmapped output of UnreproducibleAttention at attention differs"),
])
def test_the_fallback_names_a_recurrent_layer_or_attention_dropout(model, needle):
    with pytest.warns(RuntimeWarning, match="falling back to one run at a time"):
        p = UserProblem(model, token_data(), batch_size=8, steps=STEPS)
    assert not p.vmappable and needle in p.fallback_reason
    ts = trials(p, optimizers=("adam",))
    assert_same_runs(engine.run(p, ts), loop.run_sequential(p, ts))


# ---- data checks on all of the data, before any run ----


def rows_data(n_train=400, n_val=40):
    return classification_data(n_train, n_val)


def with_value(split, row, value, column=0):
    (x, y) = split
    x = x.clone()
    x[row, column] = value
    return x, y


@pytest.mark.parametrize(("make_data", "needle"), [
    (lambda: (with_value(rows_data()[0], 300, float("nan")), rows_data()[1]),
     "data(): the train split: X holds NaN in 1 of 400 rows, the first at row 300"),
    (lambda: (rows_data()[0], with_value(rows_data()[1], 39, float("inf"))),
     "data(): the val split: X holds infinity in 1 of 40 rows, the first at row 39"),
    (lambda: (two_input_data()[0], ((two_input_data()[1][0][0], torch.full((24, 2), float("nan"))), two_input_data()[1][1])),
     "data(): the val split: X[1] holds NaN in 24 of 24 rows"),
    (lambda: (regression_data()[0], (regression_data()[1][0], torch.cat([regression_data()[1][1][:-1], torch.tensor([float("nan")])]))),
     "data(): the val split: y holds NaN in 1 of 20 rows, the first at row 19"),
    (lambda: (rows_data()[0], (rows_data()[1][0], torch.cat([rows_data()[1][1][:-1], torch.tensor([-1])]))),
     "data(): the val split: labels run from -1 to 2 but the model outputs 3 classes"),
    (lambda: (rows_data()[0], (rows_data()[1][0], rows_data()[1][1].float())),
     "the targets are integer labels (classification) (400,) int64 in the train split but float targets (40,) float32 in the val split"),
    (lambda: (rows_data()[0], ((rows_data()[1][0],), rows_data()[1][1])),
     "data(): the val split's X (X[0] (40, 4) float32) is not structured like the train split's (X (400, 4) float32)"),
])
def test_bad_data_anywhere_is_caught_before_training(make_data, needle):
    model = mlp if "X[1]" not in needle else TwoInputs
    model = (lambda: nn.Linear(3, 1)) if "y holds" in needle else model
    with pytest.raises(UserCodeError) as info:
        UserProblem(model, make_data())
    assert needle in str(info.value)


def test_a_bad_validation_label_is_caught_for_a_user_loss_too():
    (train, (x_val, y_val)) = classification_data()
    y_val = y_val.clone()
    y_val[5] = -1
    loss = lambda out, y: F.cross_entropy(out, y, label_smoothing=0.1)
    with pytest.raises(UserCodeError, match=r"data\(\): the val split, rows 0 to 23: loss\(output, target\) raised IndexError"):
        UserProblem(mlp, (train, (x_val, y_val)), loss=loss)


def test_a_batch_larger_than_the_training_split_warns():
    with pytest.warns(RuntimeWarning, match=r"batch_size 64 is larger than the training split \(48 rows\)"):
        p = UserProblem(mlp, classification_data(), batch_size=64)
    assert p.batch_size == 64


def test_an_output_without_a_tensor_is_refused():
    class Words(nn.Module):
        def __init__(self):
            super().__init__()
            self.layer = nn.Linear(4, 3)

        def forward(self, x):
            return {"label": "positive"}

    with pytest.raises(UserCodeError, match=r"model\(X\) must return a Tensor, a tuple / list or a dict of tensors"):
        UserProblem(Words, classification_data())


# ---- the examples ----


@pytest.mark.parametrize("name", ["hf_style_transformer", "two_input_model"])
def test_the_examples_run_batched_in_a_tiny_comparison(name, tmp_path):
    from pathlib import Path

    from optarena import comparison

    spec = comparison.load_problem_file(Path(__file__).resolve().parents[2] / "examples" / f"{name}.py")
    assert spec.steps and spec.batch_size
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # no fallback
        result = comparison.compare(spec.model, spec.data, loss=spec.loss, optimizers="adam,sgd", budget=1, seeds=1,
                                    steps=3, batch_size=spec.batch_size, method="random", progress=False)
    assert result.problem["vmappable"] and result.problem["fallback_reason"] is None
    runs = [r for o in result.optimizers for r in result._runs(o)]
    assert runs and all(r.status == "done" for r in runs)
