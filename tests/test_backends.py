"""Backends: the ray backend (a local 2-CPU Ray cluster, started once for the module) stores the
same results as the local backend, resumes, retries a batch whose worker process died (storing it
once), and without Ray installed says which extra to install."""

from __future__ import annotations

import functools
import os
import sys
from pathlib import Path

import pytest

from optarena import backends, console
from optarena.store import Store
from optarena.study import Setup, StudyKey, TunedStudy, execute, load_problem

ray = pytest.importorskip("ray")

STUDY = TunedStudy(StudyKey("tuned", "noisy_quadratic", "test"), ("sgd", "adam"), budget=3, seeds=2,
                   setup=Setup(steps=20))

# Measured, not computed: these differ between any two executions, so they are not compared.
TIMINGS = ("wall_time", "step_time")


@pytest.fixture(scope="module")
def ray_backend():
    # Workers import this module too (its factories are pickled by reference).
    here = str(Path(__file__).resolve().parent)
    path = os.pathsep.join(p for p in (here, os.environ.get("PYTHONPATH", "")) if p)
    backend = backends.get("ray", workers=2, runtime_env={"env_vars": {"PYTHONPATH": path}})
    yield backend
    backend.close()


def stored(store: Store) -> dict[str, dict]:
    """Every stored run by run key, as the store gives it back (losses as Python floats)."""
    rows = {}
    for result in store.results():
        row = result.as_dict()
        for name in TIMINGS:
            row.pop(name)
        rows[result.trial.run_key] = row
    return rows


def test_ray_stores_bitwise_the_same_results_as_local(ray_backend):
    with Store() as local, Store() as distributed:
        execute(STUDY, local)
        execute(STUDY, distributed, backend=ray_backend)
        expected, got = stored(local), stored(distributed)
    assert len(expected) == STUDY.n_runs
    assert got.keys() == expected.keys()
    for key in expected:
        assert got[key] == expected[key], key  # == on floats: bitwise, not approximately


def test_ray_resumes_a_partial_study_running_only_the_missing_runs(ray_backend, tmp_path):
    with Store(tmp_path / "full.sqlite") as reference:
        execute(STUDY, reference)
        expected = stored(reference)
        some = list(reference.results())[: STUDY.n_runs // 3]
    with Store(tmp_path / "partial.sqlite") as store:
        store.put_many(some)  # what a driver killed part-way had already written
        before = {r.trial.run_key: r.wall_time for r in store.results()}
        execute(STUDY, store, backend=ray_backend)
        after = {r.trial.run_key: r.wall_time for r in store.results()}
        got = stored(store)
    assert got == expected
    assert all(after[key] == wall for key, wall in before.items())  # stored runs were not rerun


def die_on_first_attempt(marker: str, name: str, device: str):
    """A factory whose first call kills its worker process outright (as a SIGKILL or an
    out-of-memory kill would): the task must be retried in a fresh worker."""
    path = Path(marker)
    if not path.exists():
        path.write_text("died once")
        os._exit(1)
    return load_problem(name, device)


def test_a_batch_whose_worker_dies_is_retried_and_stored_once(ray_backend, tmp_path):
    study = TunedStudy(StudyKey("tuned", "noisy_quadratic", "retry"), ("adam",), budget=2, seeds=1,
                       defaults=False, setup=Setup(steps=10))
    marker = tmp_path / "attempt"
    factory = functools.partial(die_on_first_attempt, str(marker), "noisy_quadratic", "cpu")
    with Store() as store, Store() as reference:
        execute(study, store, backend=ray_backend, factory=factory, batch_size=study.n_runs)
        execute(study, reference)
        assert marker.exists()  # the first attempt did die
        assert len(store) == study.n_runs  # one row per trial: the retry did not duplicate any
        assert stored(store) == stored(reference)


def test_without_ray_the_backend_says_which_extra_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` now raises ImportError
    monkeypatch.delitem(sys.modules, "optarena.backends.ray", raising=False)
    with pytest.raises(console.UsageError, match=r"pip install optarena\[ray\]") as caught:
        backends.get("ray")
    assert "\n" not in str(caught.value)


def test_claims_on_ray_write_the_same_verdicts_as_local(ray_backend, tmp_path):
    """Issue 9: the same claims with --backend ray give the same verdicts.json (measured seconds
    aside) as with local; on ray the studies run side by side."""
    import json

    from optarena.verdicts import run_claims, write_outputs

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    try:
        from backend_speedup import strip_timings
    finally:
        sys.path.pop(0)
    written = {}
    for name, backend in (("local", None), ("ray", ray_backend)):
        with Store(tmp_path / f"{name}.sqlite") as store:
            verdicts, meta = run_claims(["M2", "M4"], True, store, backend=backend)
        assert meta["backend"] == name
        write_outputs(verdicts, meta, tmp_path / name)
        written[name] = strip_timings(json.loads((tmp_path / name / "verdicts.json").read_text()))
    assert written["ray"] == written["local"]
    assert [v["verdict"] for v in written["local"]] and all(v["run_keys"] for v in written["local"])


def small_mlp():
    import torch

    return torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 2))


def small_data():
    import torch

    g = torch.Generator().manual_seed(0)
    x = torch.randn(60, 4, generator=g)
    y = (x[:, 0] + x[:, 1] > 0).long()
    return (x[:40], y[:40]), (x[40:], y[40:])


def test_compare_on_ray_gives_the_local_comparison(ray_backend):
    """`compare(..., backend=)` in the Python API: the user's model, data and loss go to the
    workers by pickling, and the stored runs and the table are those of the local backend."""
    from optarena.comparison import compare

    options = dict(optimizers=["adam", "sgd"], budget=2, seeds=2, steps=8, batch_size=8, progress=False)
    with Store() as here, Store() as there:
        local = compare(small_mlp, small_data(), store=here, **options)
        distributed = compare(small_mlp, small_data(), store=there, backend=ray_backend, **options)
        assert stored(there) == stored(here) and len(stored(here)) == 12
    def measured_aside(rows):  # seconds per step are measured, so they differ between any two runs
        return [{k: v for k, v in r.items() if k != "seconds_per_step"} for r in rows]

    assert measured_aside(distributed.table()) == measured_aside(local.table())
    assert distributed.best == local.best
