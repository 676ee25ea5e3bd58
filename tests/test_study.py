"""The study executor: run_missing through a backend, batch planning, tuned studies (grid and
batched TPE, selection on the mean over seeds, reruns on fresh seeds), sweeps, stored-only lookup
and study keys."""

from __future__ import annotations

import math

import pytest

from optarena import study as study_module
from optarena.backends import Job
from optarena.store import Store
from optarena.study import (MissingRuns, Setup, StudyKey, StudyResult, Sweep, TunedStudy, by_kind, execute,
                            plan_batches, run_missing)
from optarena.trial import RunResult, Trial
from test_store import CountingRunner, fake_result, make_trials

JOB = Job(problem=None)


class FnBackend:
    """A backend that hands every batch to a plain function (stands in for the engine)."""

    name = "fn"

    def __init__(self, fn, workers: int = 1) -> None:
        self.fn, self._workers = fn, workers

    def workers(self) -> int:
        return self._workers

    def map(self, job, batches):
        for i, b in enumerate(batches):
            yield i, self.fn(b)


def test_run_missing_runs_only_the_missing_trials_and_keeps_order():
    trials = make_trials(10)
    runner = CountingRunner()
    progress = []
    with Store() as store:
        store.put_many(fake_result(t) for t in trials[:3])
        results = run_missing(store, trials, JOB, FnBackend(runner), batch_size=3, on_batch=progress.append)
        assert runner.n_run == 7
        assert [len(b) for b in runner.batches] == [3, 3, 1]
        assert [r.trial for r in results] == trials
        assert progress == [3, 3, 1]
        assert len(store) == 10

        again = CountingRunner()
        shuffled = trials[::-1] + trials[:2]
        results = run_missing(store, shuffled, JOB, FnBackend(again))
        assert again.n_run == 0
        assert [r.trial for r in results] == shuffled
        assert all(r.final == fake_result(r.trial).final for r in results)


def test_run_missing_without_batch_size_runs_everything_at_once():
    runner = CountingRunner()
    with Store() as store:
        run_missing(store, make_trials(6), JOB, FnBackend(runner))
    assert [len(b) for b in runner.batches] == [6]


def test_a_crash_in_batch_two_keeps_batch_one_and_a_rerun_runs_only_the_rest(tmp_path):
    trials = make_trials(9)
    path = tmp_path / "runs.db"
    crashing = CountingRunner(fail_on_call=2)
    with Store(path) as store:
        with pytest.raises(RuntimeError, match="simulated crash"):
            run_missing(store, trials, JOB, FnBackend(crashing), batch_size=4)
    with Store(path) as store:  # a new process would see the same file
        assert len(store) == 4
        assert store.missing(trials) == trials[4:]
        rerun = CountingRunner()
        results = run_missing(store, trials, JOB, FnBackend(rerun), batch_size=4)
        assert [t for b in rerun.batches for t in b] == trials[4:]
        assert [r.trial for r in results] == trials


def test_run_missing_complains_when_the_runner_drops_a_trial():
    def lossy_runner(trials):
        return [fake_result(t) for t in trials[:-1]]

    trials = make_trials(4)
    with Store() as store:
        with pytest.raises(RuntimeError, match="no result for 1 of the 4"):
            run_missing(store, trials, JOB, FnBackend(lossy_runner))
        assert len(store) == 3  # what it did return is kept




def test_batches_depend_on_the_trials_alone_and_keep_optimizers_together():
    trials = [Trial("p", o, seed=s, hparams={"lr": lr}) for o in ("adam", "sgd") for s in range(3) for lr in (0.1, 0.01)]
    small = plan_batches(trials, workers=2)
    assert small == plan_batches(trials[::-1], workers=1)  # same plan for any order and backend
    assert sum(map(len, small)) == len(trials) and sorted(t.run_key for b in small for t in b) == sorted(t.run_key for t in trials)
    many = [Trial("p", o, seed=s, hparams={"lr": lr}) for o in ("adam", "sgd") for s in range(4) for lr in (1.0, 0.3, 0.1, 0.03, 0.01, 0.003, 0.001, 1e-4)]
    batches = plan_batches(many, workers=2)
    assert len(batches) == round(len(many) / study_module.BATCH_TARGET) == 2
    for b in batches:  # 64 trials: one batch per optimizer
        assert len({t.optimizer for t in b}) == 1
    capped = plan_batches(many, batch_size=5)
    assert max(map(len, capped)) == 5 and sum(map(len, capped)) == len(many)
    assert plan_batches([], workers=2) == []


def test_study_keys_print_and_are_looked_up_by_kind_preferring_full_mode():
    quick, full = StudyKey("tuned", "digits_mlp", "quick"), StudyKey("tuned", "digits_mlp", "full")
    assert str(quick) == "tuned/digits_mlp/quick" and str(StudyKey("M2", "beale")) == "M2/beale"
    sweep = Sweep(quick, ())
    results = {quick: StudyResult(sweep), full: StudyResult(Sweep(full, ())), StudyKey("deep", "x", "quick"): StudyResult(sweep)}
    assert by_kind(results, "tuned")["digits_mlp"].study.key == full
    assert set(by_kind(results, "deep")) == {"x"} and by_kind(results, "nope") == {}


def _study(**kw) -> TunedStudy:
    base = dict(key=StudyKey("t", "noisy_quadratic"), optimizers=("sgd", "adam"), budget=4, seeds=2,
                setup=Setup(steps=30))
    return TunedStudy(**{**base, **kw})


@pytest.mark.parametrize("method", ["grid", "tpe"])
def test_a_tuned_study_selects_on_the_mean_over_selection_seeds_and_reruns_on_fresh_seeds(method):
    study = _study(method=method, selection_seeds=2)
    with Store() as store:
        result = execute(study, store)
        assert len(store) == study.n_runs
    for o in study.optimizers:
        assert len(result.tuning[o]) == study.budget * 2 and len(result.points[o]) == study.budget
        assert {r.trial.seed for r in result.tuning[o]} == {0, 1}
        assert [r.trial.seed for r in result.tuned[o]] == [2, 3] == [r.trial.seed for r in result.defaults[o]]
        best_value = min(v for _, v in result.points[o])
        chosen = [v for p, v in result.points[o] if p == result.best[o]]
        assert chosen and chosen[0] == best_value and math.isfinite(best_value)
        # the selection objective is the mean over the two seeds of that point
        runs = [r for r in result.tuning[o] if dict(r.trial.hparams) == result.best[o]]
        assert chosen[0] == pytest.approx(sum(r.final["val_loss"] for r in runs) / 2)


def test_tpe_runs_every_optimizers_round_as_one_batch(monkeypatch):
    batches = []
    original = study_module.run_missing

    def spy(store, trials, job, backend=None, batch_size=None, on_batch=None):
        batches.append({t.optimizer for t in store.missing(trials)})
        return original(store, trials, job, backend, batch_size, on_batch)

    monkeypatch.setattr(study_module, "run_missing", spy)
    with Store() as store:
        execute(_study(method="tpe", budget=8), store)
    tuning_rounds = [b for b in batches[:-1] if b]
    assert len(tuning_rounds) == 4 and all(b == {"sgd", "adam"} for b in tuning_rounds)


def test_stored_only_never_trains_and_names_what_is_missing():
    study = _study()
    with Store() as store:
        with pytest.raises(MissingRuns, match="not in the store"):
            execute(study, store, stored_only=True)
        assert len(store) == 0
        first = execute(study, store)
        again = execute(study, store, stored_only=True)
    assert again.best == first.best and again.run_keys() == first.run_keys()


def test_a_sweep_runs_its_trials_in_order_with_the_setup_in_each_trial():
    trials = tuple(Trial("noisy_quadratic", "sgd", "article", {"lr": lr}, 0, 20, "warmup-cosine", 0.1) for lr in (0.01, 0.1))
    with Store() as store:
        result = execute(Sweep(StudyKey("s", "noisy_quadratic"), trials), store)
    assert [r.trial for r in result.runs] == list(trials)
    assert all(r.status == "done" for r in result.runs)


def test_tuning_weight_decay_uses_a_contenders_own_decoupled_decay():
    from optarena import rules, tuning

    for o in rules.names("contender"):
        space = tuning.space(o, ("weight_decay",), convention="pytorch")
        assert "weight_decay" in space and "decoupled_weight_decay" not in space, o
    assert "decoupled_weight_decay" in tuning.space("adam", ("weight_decay",), convention="pytorch")
    assert "weight_decay" in tuning.space("adamw", ("weight_decay",), convention="pytorch")
