"""The ``ray`` backend: each batch is one Ray task; workers return results, the driver stores them.

``RayBackend(address=None)`` starts a local cluster on this machine's cores (or ``workers`` CPUs);
``RayBackend(address="host:6379")`` joins a running one (``ray start --head`` / ``ray start
--address ...``). A batch is a whole vectorised engine run (one problem, many trials), never a
single run, so Ray's per-task overhead is paid once per batch. A worker process that dies loses
only its task, which Ray reruns (``max_retries``); since workers never write the store, a rerun
cannot store a result twice.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterator, Sequence

from optarena.backends import Job
from optarena.console import UsageError
from optarena.trial import RunResult, Trial

# A worker killed mid-batch (out of memory, a lost node) is rerun this many times before the
# study fails; a batch that raises in Python is not retried (it would raise again).
MAX_RETRIES = 3


class MissingExtra(UsageError, ImportError):
    """Ray is not installed: a usage error (exit 2) that is also an ImportError for callers that
    catch the import failing."""


try:
    import ray
    from ray import cloudpickle
except ImportError:  # the optional extra
    ray = None

# Problems built in this worker process, by factory: a problem holds its data, so it is built
# once per process, not once per batch.
# Keyed by the digest of the pickled factory: each task unpickles a new factory object, so the
# object itself cannot be the key.
_problems: dict[str, object] = {}


def _problem(key: str, factory: Callable[[], object]) -> object:
    if key not in _problems:
        _problems[key] = factory()
    return _problems[key]


def _run_batch(key: str, factory: Callable[[], object], batch: list[Trial], device: str, trace: tuple[str, ...],
               threads: int) -> list[RunResult]:
    """One batch in a worker process (the body of the Ray task)."""
    import torch

    from optarena.runners import run_trials

    # Each task holds one CPU of the cluster; more torch threads than that would oversubscribe
    # the cores other tasks run on.
    os.environ["OMP_NUM_THREADS"] = str(threads)
    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
    return run_trials(_problem(key, factory), batch, device, trace)


class RayBackend:
    """Batches as Ray tasks on a local cluster (`address` None) or the cluster at `address`.

    `workers`: CPUs of the local cluster it starts (default: this machine's cores); with an
    address, the cluster's own CPU count decides. `threads`: torch threads per task (default 1,
    one task per CPU)."""

    name = "ray"

    def __init__(self, address: str | None = None, workers: int | None = None, threads: int | None = None,
                 **init_options) -> None:
        if ray is None:
            raise MissingExtra("--backend ray needs Ray: pip install optarena[ray]")
        if workers is not None and workers < 1:
            raise ValueError(f"workers must be >= 1 or None, got {workers}")
        if threads is not None and threads < 1:
            raise ValueError(f"threads must be >= 1 or None, got {threads}")
        self.threads = threads or 1
        self._started = False
        if not ray.is_initialized():
            if address is None:
                init_options.setdefault("num_cpus", workers or os.cpu_count() or 1)
                init_options.setdefault("include_dashboard", False)
            init_options.setdefault("log_to_driver", True)
            ray.init(address=address, **init_options)
            self._started = True
        self._task = ray.remote(num_cpus=self.threads, max_retries=MAX_RETRIES)(_run_batch)

    def workers(self) -> int:
        """Tasks that run at once: the cluster's CPUs over the CPUs each task takes."""
        cpus = int(ray.cluster_resources().get("CPU", 1))
        return max(1, cpus // self.threads)

    def map(self, job: Job, batches: Sequence[list[Trial]]) -> Iterator[tuple[int, list[RunResult]]]:
        if not batches:
            return
        if job.factory is None:
            raise ValueError("the ray backend needs Job.factory (how a worker builds the problem); got None")
        pickled = cloudpickle.dumps(job.factory)
        key = hashlib.sha256(pickled).hexdigest()
        factory = ray.put(job.factory)  # sent once, not with every task
        pending = {self._task.remote(key, factory, list(b), job.device, tuple(job.trace), self.threads): i
                   for i, b in enumerate(batches)}
        try:
            while pending:
                done, _ = ray.wait(list(pending), num_returns=1)
                for ref in done:
                    yield pending.pop(ref), ray.get(ref)
        finally:
            for ref in pending:  # the driver stopped (an error, Ctrl-C): drop what has not run
                ray.cancel(ref)

    def close(self) -> None:
        """Shut down the cluster this backend started (a joined cluster stays up)."""
        if self._started and ray.is_initialized():
            ray.shutdown()
        self._started = False
