"""engine.run splits a stack that would exceed its memory budget into parts (engine.runs_per_stack),
so that a study of any size fits: each part is trained as a stack of its own, deterministically."""

from __future__ import annotations

import pytest

from optarena import engine, problems
from optarena.problems.sparse import SparseCTR
from optarena.trial import Trial

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def test_runs_per_stack_follows_the_size_of_a_run():
    mlp, ctr = problems.get("digits_mlp"), SparseCTR(n_train=200, n_val=50)
    assert engine.bytes_per_run(ctr) >= 8 * 4 * (2**20 + 1)  # 8 copies of its 1M float32 weights
    assert engine.runs_per_stack(ctr) == engine.MEMORY_BUDGET // engine.bytes_per_run(ctr)
    assert engine.runs_per_stack(mlp) > 100 * engine.runs_per_stack(ctr)
    assert engine.runs_per_stack(ctr, memory_budget=1) == 1


def test_a_stack_over_budget_is_trained_in_parts():
    problem = problems.get("digits_mlp")
    trials = [Trial("digits_mlp", opt, "article", {"lr": lr}, seed, 20)
              for opt, lr in (("sgd", 0.1), ("adam", 1e-3)) for seed in range(3)]
    budget = 2 * engine.bytes_per_run(problem)  # two runs per part: parts of 2, sorted by rule and seed
    seen = []
    parted = engine.run(problem, trials, memory_budget=budget, progress=lambda k, n: seen.append((k, n)))
    # the stack is sorted by rule (adam before sgd), then seed: parts [adam0, adam1], [adam2, sgd0], [sgd1, sgd2]
    sgd, adam = trials[:3], trials[3:]
    by_hand = {r.trial: r for part in ([adam[0], adam[1]], [adam[2], sgd[0]], [sgd[1], sgd[2]])
               for r in engine.run(problem, part)}
    for a in parted:
        assert a.curve == by_hand[a.trial].curve
    whole = engine.run(problem, trials)
    for a, b in zip(parted, whole):
        assert a.final["train_loss"] == pytest.approx(b.final["train_loss"], rel=1e-5)
    assert seen[-1] == (6, 6) and [k for k, _ in seen] == sorted(k for k, _ in seen)
