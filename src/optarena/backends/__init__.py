"""Where batches of trials run: ``local`` (this process) or ``ray`` (a Ray cluster).

A backend takes a `Job` (the problem and how to run it) and a list of batches, and yields each
batch's results as it finishes; the driver (``optarena.study``) writes every batch to the store in
one transaction, so the store, resume and run keys are the same whichever backend ran the batch.
The unit of work is a whole batch (one problem, many trials, one vectorised engine run), never a
single run.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from optarena.trial import RunResult, Trial

BACKENDS = ("local", "ray")


@dataclass(frozen=True)
class Job:
    """What a worker needs to run batches: the problem (built here) and, for workers in other
    processes, a picklable `factory` that builds the same problem there."""

    problem: object
    factory: Callable[[], object] | None = None
    device: str = "cpu"
    trace: tuple[str, ...] = field(default_factory=tuple)


class Backend(Protocol):
    name: str

    def workers(self) -> int:
        """How many batches can run at once (sizes the batches)."""

    def map(self, job: Job, batches: Sequence[list[Trial]]) -> Iterator[tuple[int, list[RunResult]]]:
        """Run every batch; yield (index of the batch, its results in trial order) as each finishes."""


class LocalBackend:
    """Batches run one after another in this process."""

    name = "local"

    def workers(self) -> int:
        return 1

    def map(self, job: Job, batches: Sequence[list[Trial]]) -> Iterator[tuple[int, list[RunResult]]]:
        from optarena.runners import run_trials

        for i, batch in enumerate(batches):
            yield i, run_trials(job.problem, batch, job.device, job.trace)

    def close(self) -> None:
        pass


def get(name: str = "local", address: str | None = None, **options) -> Backend:
    """The backend called `name`; "ray" joins the cluster at `address` (None: start a local one)."""
    if name == "local":
        return LocalBackend()
    if name == "ray":
        from optarena.backends.ray import RayBackend

        return RayBackend(address=address, **options)
    raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, got {name!r}")
