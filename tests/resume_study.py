"""A small study run to completion in a file store; tests/test_resume.py kills it and starts it again.

    python tests/resume_study.py STORE LOG [--delay SECONDS]

Runs the 40 trials of `trials()` (noisy_quadratic, 8 optimizers x 5 learning rates, seeds 0-2) as
one study (`study.execute` with fixed trials, batches of 8, `engine.run`). Before a batch is
trained, its run keys are appended to LOG as one line and fsync'ed, so the log holds every batch
that ever started training, even in a process killed right after. `--delay` sleeps that long after
logging each batch (to give the test a moment in which a batch is surely in flight).
"""

from __future__ import annotations

import argparse
import os
import time

import torch

from optarena import engine, problems, rules
from optarena.store import Store
from optarena.study import StudyKey, Sweep, execute
from optarena.trial import Trial

PROBLEM = "noisy_quadratic"
BATCH_SIZE = 8
STEPS = 60
OPTIMIZERS = ("sgd", "momentum", "adagrad", "rmsprop", "adam", "adamw", "adadelta", "nadam")


def trials() -> list[Trial]:
    out = []
    for i, optimizer in enumerate(OPTIMIZERS):
        default_lr = rules.defaults(optimizer, "article")["lr"]
        for j, factor in enumerate((0.3, 1.0, 3.0, 0.5, 2.0)):
            out.append(Trial(PROBLEM, optimizer, "article", {"lr": default_lr * factor}, (i + j) % 3, STEPS))
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("store")
    parser.add_argument("log")
    parser.add_argument("--delay", type=float, default=0.0)
    args = parser.parse_args()
    torch.set_num_threads(1)
    train = engine.run

    def logged_run(problem, batch, **kwargs):
        with open(args.log, "a") as log:
            log.write(" ".join(t.run_key for t in batch) + "\n")
            log.flush()
            os.fsync(log.fileno())
        time.sleep(args.delay)
        return train(problem, batch, **kwargs)

    engine.run = logged_run  # study.execute trains through engine.run
    study = Sweep(StudyKey("resume", PROBLEM), tuple(trials()))
    with Store(args.store) as store:
        result = execute(study, store, problem=problems.get(PROBLEM), batch_size=BATCH_SIZE)
    assert len(result.runs) == len(study.trials)


if __name__ == "__main__":
    main()
