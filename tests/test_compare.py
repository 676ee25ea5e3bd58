"""optarena.compare: the Python API, the recommendation rule, resuming, failures and divergence."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from torch import nn

from optarena import comparison as compare_module
from optarena.comparison import EIGHT, Comparison, compare, resolve_optimizers, run_comparison
from optarena.problems.user import UserProblem
from optarena import console
from optarena.store import Store
from optarena.study import StudyKey, StudyResult, TunedStudy
from optarena.trial import RunResult, Trial

ROW_KEYS = {"optimizer", "best_hparams", "val_loss_mean", "val_loss_ci95", "default_val_loss", "diverged_fraction"}
FAST = dict(budget=2, seeds=2, steps=8, progress=False)


def classification_data():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(60, 4, generator=g)
    y = (x[:, 0] + x[:, 1] > 0).long()
    return (x[:40], y[:40]), (x[40:], y[40:])


def regression_data():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(60, 3, generator=g)
    y = x @ torch.tensor([1.0, -2.0, 0.5])
    return (x[:40], y[:40]), (x[40:], y[40:])


def mlp():
    return nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 2))


# ---- the API ----


def test_compare_end_to_end(tmp_path):
    rng_state = torch.random.get_rng_state()
    threads = torch.get_num_threads()
    c = compare(mlp, classification_data(), optimizers=["adam", "sgd"], batch_size=8, **FAST)
    assert torch.equal(torch.random.get_rng_state(), rng_state)
    assert torch.get_num_threads() == threads

    rows = c.table()
    assert [r["optimizer"] for r in rows] == ["adam", "sgd"]
    for r in rows:
        assert ROW_KEYS <= set(r)
        assert set(r["best_hparams"]) == ({"lr"} if r["setting"] == "tuned" else set())
        finals = [run.final["val_loss"] for run in getattr(c.result, r["setting"])[r["optimizer"]]]
        assert r["val_loss_mean"] == pytest.approx(np.mean(finals))
        assert r["val_loss_ci95"][0] <= r["val_loss_mean"] <= r["val_loss_ci95"][1]
        assert r["runs"] == 2 + 2 + 2 and 0.0 <= r["diverged_fraction"] <= 1.0
    assert c.best in ("adam", "sgd") or sorted(c.best) == ["adam", "sgd"]

    html_path = c.report(tmp_path / "out")
    assert html_path == tmp_path / "out" / "report.html"
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["comparison.json", "report.html"]
    assert [p.name for p in tmp_path.iterdir()] == ["out"]  # the temporary folder is gone
    saved = json.loads((tmp_path / "out" / "comparison.json").read_text())
    assert {"recommendation", "reason", "rows"} <= set(saved)
    assert saved["recommendation"] == c.best
    assert all(ROW_KEYS <= set(r) for r in saved["rows"])
    page = html_path.read_text()
    for text in ("Recommendation", "Learning-rate sensitivity", "Held-out loss during training", "<table class=\"compare\">"):
        assert text in page
    assert page.count("data:image/png;base64,") == 5  # tuned vs default, loss and training loss against steps, loss against time, lr


def test_optarena_compare_is_callable():
    import optarena

    c = optarena.compare(model=mlp, data=classification_data(), optimizers="adam", budget=1, seeds=1, steps=4, progress=False)
    assert c.best == "adam" and "only optimizer compared" in c.reason


def test_optimizer_names():
    from optarena import rules

    assert resolve_optimizers("article") == EIGHT == ("sgd", "momentum", "adagrad", "rmsprop", "adam", "adadelta", "nadam", "ftrl")
    contenders = tuple(rules.names("contender"))
    assert resolve_optimizers("contenders") == contenders
    assert resolve_optimizers("all") == EIGHT + contenders == resolve_optimizers(None)
    assert resolve_optimizers("all", "pytorch") == tuple(o for o in EIGHT + contenders if o != "ftrl")
    with pytest.raises(ValueError, match="cannot be combined"):
        resolve_optimizers("all,adam")
    assert resolve_optimizers("adam, SGD,adam") == ("adam", "sgd")
    assert resolve_optimizers(["adamw"]) == ("adamw",)
    with pytest.raises(ValueError, match=r"unknown optimizer 'adamx'; valid names: sgd, momentum, .*ftrl"):
        resolve_optimizers("adam,adamx")
    with pytest.raises(ValueError, match="no 'pytorch' convention"):
        resolve_optimizers("ftrl", "pytorch")
    with pytest.raises(ValueError, match="unknown optimizer"):
        compare(mlp, classification_data(), optimizers="adamx", **FAST)


@pytest.mark.parametrize(("kwargs", "needle"), [({"budget": 0}, "budget"), ({"seeds": 0}, "seeds"), ({"method": "bayes"}, "method"),
                                                ({"backend": "dask"}, "backend must be one of local, ray")])
def test_bad_settings(kwargs, needle):
    with pytest.raises(ValueError, match=needle):
        compare(mlp, classification_data(), optimizers="adam", **{**FAST, **kwargs})


def test_resumes_from_the_store(tmp_path):
    path = tmp_path / "store.sqlite"
    first = compare(mlp, classification_data(), optimizers="adam", store=path, **FAST)
    with Store(path) as store:
        n = len(store)
    assert n == 6
    again = compare(mlp, classification_data(), optimizers="adam", store=path, **FAST)
    with Store(path) as store:
        assert len(store) == n
    assert again.table() == first.table()


# ---- the recommendation rule ----


def synthetic(losses: dict[str, list[float]], defaults: float | dict[str, float] = 2.0,
              step_time: dict[str, float] | None = None) -> Comparison:
    """A StudyResult whose tuned reruns have the given held-out losses (inf: diverged) and whose
    default reruns have `defaults` (per optimizer or for all)."""
    study = TunedStudy(StudyKey("s", "p"), tuple(losses), budget=1, seeds=len(next(iter(losses.values()))))
    result = StudyResult(study)
    for o, values in losses.items():
        result.tuning[o] = [RunResult(Trial("p", o, "article", {"lr": 0.1}, 0, 5), "done", final={"val_loss": 1.0})]
        result.best[o] = {"lr": 0.1}
        result.tuned[o] = [
            RunResult(Trial("p", o, "article", {"lr": 0.1}, s + 1, 5), "done" if math.isfinite(v) else "diverged",
                      final={"val_loss": v})
            for s, v in enumerate(values)
        ]
        d = defaults.get(o, 2.0) if isinstance(defaults, dict) else defaults
        result.defaults[o] = [RunResult(Trial("p", o, "article", {}, s + 1, 5), "done" if math.isfinite(d) else "diverged",
                                        final={"val_loss": d}) for s in range(len(values))]
        for r in result.tuned[o]:
            r.step_time = {"model": (step_time or {}).get(o, 1e-3), "update": 0.0}
    return Comparison(result, {"name": "p"})


def test_a_leader_better_on_every_seed_is_recommended_alone():
    c = synthetic({"sgd": [2.0, 2.1, 2.2], "adam": [1.0, 1.1, 1.2], "rmsprop": [1.5, 1.6, 1.7]})
    assert c.best == "adam"
    assert c.reason.startswith("adam reached the lowest held-out loss 1.1 ")
    assert "runner-up rmsprop at 1.6 (rmsprop minus adam, paired over seeds: 0.5, 95% t interval [0.5, 0.5])" in c.reason


def test_leaders_not_separable_are_listed():
    c = synthetic({"adam": [1.0, 1.2, 1.1], "nadam": [1.05, 1.15, 1.12], "sgd": [3.0, 3.1, 3.2]})
    assert c.best == ["adam", "nadam"]
    assert "not separable at 95%" in c.reason and "sgd" in c.reason


def test_a_setting_that_diverged_on_one_seed_ranks_last():
    c = synthetic({"adam": [0.5, math.inf, 0.5], "sgd": [1.0, 1.1, 1.2]}, defaults=math.inf)
    assert c.best == "sgd"
    row = c.table()[0]
    assert row["val_loss_mean"] == math.inf and row["diverged_fraction"] == pytest.approx(4 / 7)  # 1 tuned, 3 defaults
    assert json.loads(json.dumps(c.as_json()))["rows"][0]["val_loss_mean"] is None


def test_an_optimizers_result_is_the_better_of_its_tuned_and_default_settings():
    c = synthetic({"adam": [1.0, 1.1, 1.2], "nadam": [3.0, 3.1, 3.2]}, defaults={"adam": 2.0, "nadam": 0.5})
    rows = {r["optimizer"]: r for r in c.table()}
    assert rows["nadam"]["setting"] == "defaults" and rows["nadam"]["val_loss_mean"] == pytest.approx(0.5)
    assert rows["nadam"]["best_hparams"] == {} and rows["adam"]["setting"] == "tuned"
    assert c.best == "nadam" and "at its defaults" in c.reason


def test_steps_to_target_and_seconds_per_step_are_reported():
    c = synthetic({"adam": [1.0, 1.0, 1.0], "sgd": [1.04, 1.04, 1.04]}, step_time={"adam": 2e-3, "sgd": 1e-3})
    rows = {r["optimizer"]: r for r in c.table()}
    assert c.target == pytest.approx(1.05)
    assert rows["adam"]["seconds_per_step"] == pytest.approx(2e-3) and rows["sgd"]["seconds_per_step"] == pytest.approx(1e-3)
    assert rows["adam"]["steps_to_target"] == math.inf  # the synthetic runs have no curve
    # sgd is within the noise of adam? Equal losses on every seed: separable, so no cheaper-optimizer note.
    assert "cheaper per step" not in c.reason


def test_a_cheaper_optimizer_as_good_within_the_noise_is_named():
    c = synthetic({"adam": [1.0, 1.2, 0.9], "sgd": [1.1, 1.0, 1.05]}, step_time={"adam": 3e-3, "sgd": 1e-3})
    assert c.best == ["adam", "sgd"]  # adam's mean is lower, the difference is within the noise
    assert "sgd is as good within the noise and 3.0x cheaper per step" in c.reason


def test_a_chosen_value_at_the_edge_of_the_search_is_flagged():
    c = synthetic({"adam": [1.0, 1.0, 1.0]})
    c.result.points["adam"] = [({"lr": lr}, 1.0) for lr in (0.001, 0.01, 0.1)]
    c.result.best["adam"] = {"lr": 0.1}
    assert c._at_edge("adam") == ["lr"]
    c.result.best["adam"] = {"lr": 0.01}
    assert c._at_edge("adam") == []


# ---- failures and divergence at run time ----


def test_divergence_is_recorded_and_the_comparison_goes_on(tmp_path):
    # The grid of 2 learning rates is {1e-5, 100}: lr = 100 blows up on this regression.
    c = compare(lambda: nn.Linear(3, 1), regression_data(), optimizers="sgd,adagrad", method="grid", batch_size=8, **FAST)
    sgd = c.table()[0]
    assert sgd["diverged_fraction"] > 0
    assert any(r.status == "diverged" for r in c.result.tuning["sgd"])
    c.report(tmp_path)
    assert "diverged" in (tmp_path / "report.html").read_text()


def test_a_model_that_raises_at_run_time_is_counted_failed(tmp_path):
    calls, limit = [0], [10**9]

    class Flaky(nn.Module):
        def __init__(self):
            super().__init__()
            self.layer = nn.Linear(4, 2)

        def forward(self, x):
            calls[0] += 1
            if calls[0] > limit[0]:
                raise RuntimeError("the user's model broke")
            return self.layer(x)

    problem = UserProblem(Flaky, classification_data(), batch_size=8, steps=8)
    limit[0] = calls[0] + 30  # the grid's tuning stack finishes; the reruns fail
    c = run_comparison(problem, ["adam", "sgd"], budget=2, seeds=2, steps=8, method="grid", progress=False)
    assert c.best is None and "diverged or failed" in c.reason
    assert [r["failed"] for r in c.table()] == [4, 4]
    assert c.failed_runs()[0]["error"] == "RuntimeError: the user's model broke"
    c.report(tmp_path)
    page = (tmp_path / "report.html").read_text()
    assert "Failed runs (8)" in page and "the user&#39;s model broke" in page
    assert json.loads((tmp_path / "comparison.json").read_text())["recommendation"] is None


def test_auto_threads_use_one_thread_for_small_models_and_restore():
    problem = UserProblem(mlp, classification_data())
    before = torch.get_num_threads()
    with console.threads("auto", problem.n_parameters):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before
    with pytest.raises(ValueError, match="threads"):
        with console.threads(0, problem.n_parameters):
            pass


def test_tuning_more_than_lr_with_a_schedule_and_clipping():
    c = compare(mlp, classification_data(), optimizers="adam,momentum", tune="weight_decay,betas,momentum",
                schedule="warmup-cosine", clip_grad_norm=1.0, method="random", **FAST)
    rows = {r["optimizer"]: r for r in c.table()}
    tuned = {o: set(c.result.best[o]) for o in ("adam", "momentum")}
    assert tuned["adam"] == {"lr", "beta1", "beta2", "decoupled_weight_decay"}
    assert tuned["momentum"] == {"lr", "momentum", "decoupled_weight_decay"}
    assert all(r.trial.schedule == "warmup-cosine" and r.trial.clip_grad_norm == 1.0 for r in c.result.all_runs())
    settings = c.as_json()["settings"]
    assert sorted(settings["tune"]) == ["beta1", "beta2", "momentum", "weight_decay"] and settings["schedule"] == "warmup-cosine"
    assert set(rows) == {"adam", "momentum"}
    with pytest.raises(ValueError, match="--tune: rho is not a hyperparameter"):
        compare(mlp, classification_data(), optimizers="adam", tune="rho", **FAST)
    with pytest.raises(ValueError, match="unknown schedule"):
        compare(mlp, classification_data(), optimizers="adam", schedule="step", **FAST)


def test_the_report_shows_loss_against_steps_and_against_time(tmp_path):
    c = compare(mlp, classification_data(), optimizers="adam,sgd", **FAST)
    curves = next(s for s in c.sections() if any("against time" in p.title for p in s.get("plots", [])))
    timed = next(p for p in curves["plots"] if "against time" in p.title)
    by_steps = next(p for p in curves["plots"] if p.title.startswith("held-out loss of the chosen setting") and "time" not in p.title)
    for a, b in zip(timed.series, by_steps.series):
        per_step = c._seconds_per_step(a.label)
        assert per_step > 0 and a.x == pytest.approx([x * per_step for x in b.x]) and a.y == b.y
