"""optarena.engine: the batched engine against the plain loop users write (loop.run_sequential,
one trial after another with optarena.optim), determinism, divergence, failures and traces.

What holds exactly, and what only to rounding (measured with torch 2.13 CPU, asserted below):
- the same trials twice, or in another order: bitwise equal results;
- a trial alone in the engine: bitwise equal to the loop, where the engine differentiates with
  autograd as the loop does; to rounding (1e-6) where it uses the problem's hand-written gradient
  (``loss_and_grad``: digits_mlp, mnist_mlp, breast_cancer_logreg);
- a trial in a stack whose runs differ in a hyperparameter: that hyperparameter becomes a per-run
  float32 tensor, and torch rounds ``w.sub_(lr * u)`` differently from the loop's
  ``w.add_(u, alpha=-lr)`` (one rounding of a fused multiply-add): within 1e-6 of the loop after
  200 steps here, tested at 1e-5 for every optimizer and convention;
- a diverging batch-mate changes nothing for the others (bitwise) when it does not change which
  hyperparameters are tensors;
- the compiled paths (each group's update as one compiled kernel, ``compile=True``; the problems'
  compiled elementwise kernels, `optarena.compiled`) against the loop as above, and against the
  eager engine to rounding.
"""

from __future__ import annotations

import math

import pytest
import torch

from optarena import compiled, engine, fused, loop, problems, rules
from optarena.problems.vision import BreastCancerLogreg
from optarena.trial import RunResult, Trial

STEPS = 200
TOLERANCE = 1e-5
CONVENTIONS = ("article", "pytorch", "keras")
# Stable learning rates per problem (the second setting of each optimizer doubles them).
LR = {
    "digits_mlp": {"sgd": 0.1, "momentum": 0.05, "adagrad": 0.05, "rmsprop": 1e-3, "adam": 1e-3,
                   "adamw": 1e-3, "adadelta": 1.0, "nadam": 2e-3},
    "noisy_quadratic": {"sgd": 0.05, "momentum": 0.05, "adagrad": 0.05, "rmsprop": 1e-2, "adam": 1e-2,
                        "adamw": 1e-2, "adadelta": 1.0, "nadam": 1e-2},
    "breast_cancer_logreg": {"ftrl": 0.1},
}
# A second hyperparameter varied between the runs of one stack (per-run tensors), first present wins.
SECOND = {"beta1": 0.8, "alpha": 0.95, "rho": 0.8, "l1": 1e-3, "initial_accumulator_value": 0.2, "momentum": 0.5}


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


@pytest.fixture(scope="module")
def build():
    cache: dict[str, object] = {}

    def build(name: str):
        if name not in cache:
            cache[name] = problems.get(name)
        return cache[name]

    return build


def mixed_trials(problem: str, optimizer: str, convention: str, steps: int = STEPS) -> list[Trial]:
    """Several settings of one optimizer: lr, a second hyperparameter, weight decay."""
    defaults = rules.defaults(optimizer, convention)
    lr = LR[problem][optimizer]
    settings = [{"lr": lr}, {"lr": 2 * lr}]
    # momentum only where it is on by default: switching it on would change the code path.
    second = next((k for k in SECOND if k in defaults and (k != "momentum" or defaults[k])), None)
    if second is not None:
        settings[1][second] = SECOND[second]
    if "weight_decay" in defaults:
        settings.append({"lr": lr / 2, "weight_decay": 1e-3})
    # Seeds 0, 1, 0, ...: several seeds in one stack, runs of one seed sharing minibatches.
    return [Trial(problem, optimizer, convention, h, i % 2, steps) for i, h in enumerate(settings)]


def suite(problem: str) -> list[Trial]:
    return [
        t
        for optimizer in LR[problem]
        for convention in CONVENTIONS
        if convention in rules.entry(optimizer).conventions
        for t in mixed_trials(problem, optimizer, convention)
    ]


def max_difference(a: RunResult, b: RunResult, n_val: int | None = None) -> float:
    """Largest |a - b| over every curve point and final metric; accuracy counts in examples past one."""
    assert a.trial == b.trial and a.status == b.status and a.diverged_at == b.diverged_at
    assert a.curve.keys() == b.curve.keys() and a.final.keys() == b.final.keys()
    worst = 0.0
    for key in a.curve:
        assert len(a.curve[key]) == len(b.curve[key])
        for x, y in zip(a.curve[key] + [a.final.get(key, 0.0)], b.curve[key] + [b.final.get(key, 0.0)]):
            d = abs(x - y)
            if key.endswith("accuracy") and n_val:
                d = max(0.0, d - 1.0 / n_val)  # one held-out example may flip on a rounding difference
            worst = max(worst, d)
    return worst


def same(a: RunResult, b: RunResult) -> bool:
    """Bitwise equal results (NaN equal to NaN)."""
    def norm(xs):
        return ["nan" if isinstance(x, float) and math.isnan(x) else x for x in xs]

    return (
        a.trial == b.trial and a.status == b.status and a.diverged_at == b.diverged_at
        and {k: norm(v) for k, v in a.curve.items()} == {k: norm(v) for k, v in b.curve.items()}
        and norm(list(a.final.values())) == norm(list(b.final.values()))
        and a.trace == b.trace
    )


@pytest.fixture(scope="module", params=["digits_mlp", "noisy_quadratic", "breast_cancer_logreg"])
def stacked_and_alone(request, build, device):
    """One stack of every optimizer x convention x settings x seeds, and each trial in the loop, on
    the test device ($OPTARENA_TEST_DEVICE: benchmarks/gpu_check.sh runs these on CUDA)."""
    name = request.param
    problem = build(name) if device == "cpu" else problems.get(name, device=device)
    trials = suite(name)
    return problem, trials, engine.run(problem, trials, device=device), loop.run_sequential(problem, trials, device=device)


def test_batched_equals_the_loop_for_every_optimizer_and_convention(stacked_and_alone):
    problem, trials, batched, alone = stacked_and_alone
    assert {t.optimizer for t in trials} == set(LR[problem.name])
    assert len({t.seed for t in trials}) > 1 and len({tuple(t.hparams.items()) for t in trials}) > 1
    n_val = getattr(problem, "n_val", None)
    for t, a, b in zip(trials, batched, alone):
        assert a.status == b.status == "done", (t, a.error)
        assert a.curve["step"] == b.curve["step"] == [float(s) for s in engine.eval_points(STEPS)]
        assert max_difference(a, b, n_val) <= TOLERANCE, t


def test_the_loop_learns(stacked_and_alone):
    """Guards the comparison above against a vacuous pass: the runs actually train."""
    _, trials, batched, _ = stacked_and_alone
    for t, r in zip(trials, batched):
        assert r.curve["train_loss"][-1] < r.curve["train_loss"][0], t


def test_alone_in_the_engine_is_bitwise_the_loop(build):
    """On a problem the engine differentiates with autograd, as the loop does."""
    problem = build("noisy_quadratic")
    assert not hasattr(problem, "loss_and_grad")
    trials = [Trial("noisy_quadratic", "nadam", "pytorch", {"lr": 3e-3}, 2, 60),
              Trial("noisy_quadratic", "adamw", "keras", {}, 0, 60)]
    for t, alone in zip(trials, loop.run_sequential(problem, trials)):
        assert same(engine.run(problem, [t])[0], alone)


def test_the_hand_written_gradient_is_used_and_trains_as_autograd_does(build, monkeypatch, without_hand_gradient):
    """digits_mlp's ``loss_and_grad`` replaces autograd in the engine (the loop keeps autograd):
    a trial alone agrees with the loop, and a stack with the autograd engine, to rounding."""
    problem = build("digits_mlp")
    calls = []
    real = type(problem).loss_and_grad
    monkeypatch.setattr(type(problem), "loss_and_grad", lambda self, *a, **k: calls.append(1) or real(self, *a, **k))
    trials = [Trial("digits_mlp", "nadam", "pytorch", {"lr": 3e-3}, 2, 60), Trial("digits_mlp", "adamw", "keras", {}, 0, 60)]
    for t, alone in zip(trials, loop.run_sequential(problem, trials)):
        assert max_difference(engine.run(problem, [t])[0], alone, problem.n_val) <= 1e-6
    assert len(calls) == 2 * 60
    stack = mixed_trials("digits_mlp", "adam", "pytorch", 60) + mixed_trials("digits_mlp", "sgd", "article", 60)
    for a, b in zip(engine.run(problem, stack), engine.run(without_hand_gradient(problem), stack)):
        assert max_difference(a, b, problem.n_val) <= 1e-6


ELEMENTWISE = sorted(o for o in LR["noisy_quadratic"])


@pytest.mark.parametrize("optimizer", ELEMENTWISE)
def test_compiled_updates_equal_the_loop_for_every_convention(build, optimizer, monkeypatch):
    """``compile=True``: each group's update is one compiled call of its rule, per-run hyperparameters
    included; the runs agree with the loop (the oracle) as the eager engine's do, and with the eager
    engine to the same tolerance (measured: 5.7e-6 on losses of 5 to 20; inductor contracts a*b+c)."""
    problem = build("noisy_quadratic")
    trials = [t for c in CONVENTIONS if c in rules.entry(optimizer).conventions
              for t in mixed_trials("noisy_quadratic", optimizer, c, 60)]
    calls = []
    real = fused.update_runs_
    monkeypatch.setattr(fused, "update_runs_", lambda *a, **k: calls.append(1) or real(*a, **k))
    monkeypatch.setattr(fused, "MIN_COMPILED_VALUES", 0)  # these groups are too small to compile by themselves
    compiled_runs = engine.run(problem, trials, compile=True)
    assert calls and len(calls) % 60 == 0  # one call per group and step
    eager_runs = engine.run(problem, trials, compile=False)
    for t, a, b, c in zip(trials, compiled_runs, eager_runs, loop.run_sequential(problem, trials)):
        assert a.status == "done" and max_difference(a, c) <= TOLERANCE, t
        assert max_difference(a, b) <= TOLERANCE, t


def test_compiled_updates_follow_a_schedule(build, monkeypatch):
    problem = build("noisy_quadratic")
    trials = [Trial("noisy_quadratic", "adam", "pytorch", {"lr": 1e-2}, s, 60, "warmup-cosine", 0.2) for s in (0, 1)]
    monkeypatch.setattr(fused, "MIN_COMPILED_VALUES", 0)
    scheduled = engine.run(problem, trials, compile=True)
    for t, a, b in zip(trials, scheduled, loop.run_sequential(problem, trials)):
        assert max_difference(a, b) <= TOLERANCE, t


def test_which_groups_compile_their_update(build):
    """Whole-tensor rules never; small groups only when forced; None only for long work."""
    def group(optimizer: str, runs: int):
        trials = [Trial("digits_mlp", optimizer, "pytorch", {}, s, 10) for s in range(runs)]
        params = build("digits_mlp").init_params(torch.arange(runs))
        return engine._groups(trials, [rules.resolve(optimizer, "pytorch")] * runs, params, torch.device("cpu"))[0]

    cpu = torch.device("cpu")
    assert not engine.compiles_updates(group("muon", 20), 10**6, cpu, True)
    small, large = group("adam", 2), group("adam", 20)  # 9,620 and 96,200 values
    assert not engine.compiles_updates(small, 10**6, cpu, True)
    assert engine.compiles_updates(large, 10, cpu, True) and not engine.compiles_updates(large, 10, cpu, None)
    assert engine.compiles_updates(large, 20_000, cpu, None)
    with compiled.eager():
        assert not engine.compiles_updates(large, 20_000, cpu, True)


def test_compiled_model_kernels_train_as_the_eager_ones(build, monkeypatch):
    """digits_mlp's compiled tanh, its derivative and the softmax cross-entropy (compile=True: on a
    stack too small to compile them by itself), with compiled updates, against their eager forms
    (compile=False), through a whole training."""
    problem = build("digits_mlp")
    trials = mixed_trials("digits_mlp", "adam", "pytorch", 60) + mixed_trials("digits_mlp", "sgd", "article", 60)
    calls = []
    real = type(problem).loss_and_grad
    monkeypatch.setattr(type(problem), "loss_and_grad",
                        lambda self, *a, **k: calls.append(compiled.forced()) or real(self, *a, **k))
    monkeypatch.setattr(fused, "MIN_COMPILED_VALUES", 0)
    fast = engine.run(problem, trials, compile=True)
    assert calls and all(calls)
    slow = engine.run(problem, trials, compile=False)
    for t, a, b in zip(trials, fast, slow):
        assert a.status == "done" and max_difference(a, b, problem.n_val) <= 1e-5, t


def test_the_start_is_evaluated_once_per_seed(build, monkeypatch):
    """Before the first step every run is where its seed put it: the engine evaluates each distinct
    start once and gives every run its seed's numbers."""
    problem = build("digits_mlp")
    sizes = []
    real = type(problem).evaluate
    monkeypatch.setattr(type(problem), "evaluate", lambda self, params, **k: sizes.append(params["w1"].shape[0]) or real(self, params, **k))
    trials = [Trial("digits_mlp", "sgd", "article", {"lr": lr}, seed, 10) for lr in (0.05, 0.1, 0.2) for seed in (0, 1)]
    results = engine.run(problem, trials)
    assert sizes[0] == 2 and set(sizes[1:]) == {6}
    for t, r, alone in zip(trials, results, loop.run_sequential(problem, trials)):
        assert r.curve["train_loss"][0] == results[t.seed].curve["train_loss"][0]
        assert max_difference(r, alone, problem.n_val) <= TOLERANCE, t


def test_same_trials_give_bitwise_equal_results_in_any_order(build):
    problem = build("digits_mlp")
    trials = mixed_trials("digits_mlp", "adam", "pytorch", 40) + mixed_trials("digits_mlp", "sgd", "article", 40)
    first = engine.run(problem, trials)
    again = engine.run(problem, trials)
    reordered = engine.run(problem, trials[::-1])[::-1]
    for a, b, c in zip(first, again, reordered):
        assert same(a, b) and same(a, c)


def test_a_run_alone_and_among_batch_mates_agree_to_rounding(build):
    problem = build("digits_mlp")
    trials = mixed_trials("digits_mlp", "rmsprop", "keras", 60) + mixed_trials("digits_mlp", "momentum", "pytorch", 60)
    stacked = engine.run(problem, trials)
    for t, r in zip(trials, stacked):
        assert max_difference(r, engine.run(problem, [t])[0]) <= 1e-6, t


def test_a_diverging_run_is_frozen_and_leaves_its_batch_mates_alone(build):
    problem = build("digits_mlp")
    mates = [Trial("digits_mlp", "sgd", "article", {"lr": lr}, seed, 50) for lr, seed in ((0.05, 0), (0.1, 1), (0.2, 0))]
    wild = Trial("digits_mlp", "sgd", "article", {"lr": 1e4}, 1, 50)
    without = engine.run(problem, mates)
    with_wild = engine.run(problem, [mates[0], wild, *mates[1:]])
    r = with_wild[1]
    assert r.status == "diverged" and r.diverged_at is not None and 1 <= r.diverged_at < 50
    assert all(v == math.inf for k, v in r.final.items() if "loss" in k)
    assert r.curve["step"] and max(r.curve["step"]) < r.diverged_at  # the curve stops before divergence
    assert r.diverged_at == loop.run_sequential(problem, [wild])[0].diverged_at
    for a, b in zip(without, [with_wild[0], *with_wild[2:]]):
        assert a.status == "done" and same(a, b)


def test_invalid_hyperparameters_fail_that_trial_only(build):
    problem = build("noisy_quadratic")
    good = [Trial("noisy_quadratic", "adam", "article", {"lr": lr}, 0, 30) for lr in (1e-2, 3e-2)]
    bad = Trial("noisy_quadratic", "adam", "article", {"lr": 1e-2, "beta1": 1.5}, 0, 30)
    unknown = Trial("noisy_quadratic", "sgd", "article", {"lr": 0.1, "gamma": 2.0}, 0, 30)
    results = engine.run(problem, [good[0], bad, good[1], unknown])
    assert results[1].status == "failed" and "beta1" in results[1].error and "1.5" in results[1].error
    assert results[3].status == "failed" and "gamma" in results[3].error
    for a, b in zip(engine.run(problem, good), [results[0], results[2]]):
        assert a.status == "done" and same(a, b)


def test_a_trial_of_another_problem_is_refused(build):
    with pytest.raises(ValueError, match="rosenbrock.*noisy_quadratic"):
        engine.run(build("noisy_quadratic"), [Trial("rosenbrock", "sgd")])


def test_an_unknown_trace_is_refused(build):
    with pytest.raises(ValueError, match="unknown trace.*'weights'"):
        engine.run(build("rosenbrock"), [Trial("rosenbrock", "sgd", steps=3)], trace=("weights",))


def test_traces_have_one_entry_per_step(build):
    problem = build("rosenbrock")
    steps = 25
    trials = [Trial("rosenbrock", "adam", "article", {"lr": lr}, 0, steps) for lr in (1e-2, 3e-2)]
    trials.append(Trial("rosenbrock", "sgd", "article", {"lr": 10.0}, 0, steps))  # diverges
    results = engine.run(problem, trials, trace=engine.TRACES)
    for r in results[:2]:
        assert r.status == "done"
        for key in ("loss", "grad_norm", "update_norm", "effective_step"):
            assert len(r.trace[key]) == steps
        assert len(r.trace["params"]) == steps + 1 and all(len(p) == 2 for p in r.trace["params"])
        assert r.trace["params"][0] != r.trace["params"][-1]
    wild = results[2]
    assert wild.status == "diverged"
    d = wild.diverged_at
    # loss and gradient up to the step that diverged, the d - 1 updates applied before it, and the
    # d points those losses were taken at (the start included)
    assert len(wild.trace["loss"]) == len(wild.trace["grad_norm"]) == len(wild.trace["params"]) == d
    assert len(wild.trace["update_norm"]) == len(wild.trace["effective_step"]) == d - 1
    assert not math.isfinite(wild.trace["loss"][-1]) or wild.trace["loss"][-1] > problem.loss_bound
    assert all(x <= problem.loss_bound for x in wild.trace["loss"][:-1])


def test_trials_of_different_lengths_and_progress(build):
    problem = build("noisy_quadratic")
    trials = [Trial("noisy_quadratic", "sgd", "article", {"lr": 0.05}, s, steps) for s, steps in ((0, 10), (1, 30), (2, 10))]
    seen: list[tuple[int, int]] = []
    results = engine.run(problem, trials, progress=lambda done, total: seen.append((done, total)))
    assert [r.curve["step"][-1] for r in results] == [10.0, 30.0, 10.0]
    assert seen[-1] == (3, 3) and all(total == 3 for _, total in seen)
    assert [d for d, _ in seen] == sorted(d for d, _ in seen)
    assert all(r.wall_time > 0 for r in results)


class GroupedLogreg(BreastCancerLogreg):
    """breast_cancer_logreg with the grouped-batch extension the engine offers problems: `loss` gets
    one minibatch per distinct seed (U, B) and `slot` (R,), each run's row of it."""

    accepts_grouped_batches = True
    loss_and_grad = None  # its own `loss` through autograd, not the inherited hand-written gradient
    calls = 0

    def loss(self, params, batch, slot=None):
        assert slot is not None and batch[0].shape[0] == len(set(slot.tolist())) <= len(slot)
        type(self).calls += 1
        rows = batch[0]
        x, y = self.x_train[rows], self.y_train[rows]  # (U, B, 31), (U, B)
        every = (x.reshape(-1, x.shape[-1]) @ params["w"].T).view(x.shape[0], x.shape[1], -1)  # (U, B, R)
        logits = every[slot, :, torch.arange(len(slot))]  # (R, B): each run with its own seed's rows
        return self.example_loss(logits, y[slot]).mean(-1)


@pytest.mark.parametrize("seeds", [(0, 1, 2, 1, 0), (3, 3, 3)], ids=["several-seeds", "one-seed"])
def test_grouped_batches_give_the_same_runs(build, seeds):
    plain, grouped = build("breast_cancer_logreg"), GroupedLogreg()
    trials = [Trial("breast_cancer_logreg", o, "article", {"lr": 0.05 * (i + 1)}, s, 40)
              for i, s in enumerate(seeds) for o in ("adam", "sgd")]
    before = GroupedLogreg.calls
    for a, b in zip(engine.run(plain, trials), engine.run(grouped, trials)):
        assert a.status == b.status == "done" and max_difference(a, b) <= 1e-6
    assert GroupedLogreg.calls - before == 40


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_runs_match_cpu():
    trials = mixed_trials("digits_mlp", "adam", "pytorch", 50) + mixed_trials("digits_mlp", "nadam", "article", 50)
    on_cpu = engine.run(problems.get("digits_mlp"), trials)
    on_gpu = engine.run(problems.get("digits_mlp", device="cuda"), trials, device="cuda")
    for a, b in zip(on_cpu, on_gpu):
        assert b.status == "done" and max_difference(a, b, 397) <= 1e-4
