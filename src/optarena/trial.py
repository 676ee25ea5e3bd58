"""What one training run is (`Trial`) and what it produced (`RunResult`).

A trial is (problem, optimizer, convention, hyperparameters, seed, steps) and its training setup
(learning-rate schedule, warmup, gradient clipping). Its `run_key` is a hash of those plus the
optarena version, so the same trial is never run twice by the store.
"""

from __future__ import annotations

import functools
import hashlib
import json
from dataclasses import dataclass, field
from typing import Any, Mapping

from pathlib import Path

from optarena import __version__, schedules

# The code that determines a run's numbers: its source is hashed into every run_key, so that a
# stored result of changed code is never reused silently (a version number is bumped by hand and
# was forgotten before). Paths relative to the package folder; folders contribute every .py file.
RESULT_CODE = ("rules", "problems", "engine.py", "schedules.py")

STATUSES = ("done", "diverged", "failed")


def check_clip_grad_norm(clip: float | None) -> float | None:
    """The gradient-clipping norm as a float (None: no clipping); ValueError unless finite and > 0."""
    if clip is None:
        return None
    if isinstance(clip, bool) or not isinstance(clip, (int, float)) or not (0 < clip < float("inf")):
        raise ValueError(f"clip_grad_norm must be a finite number > 0 or None, got {clip!r}")
    return float(clip)


@dataclass(frozen=True)
class Trial:
    """One training run to do. `hparams` holds only what differs from the convention's defaults."""

    problem: str
    optimizer: str
    convention: str = "article"
    hparams: Mapping[str, float] = field(default_factory=dict)
    seed: int = 0
    steps: int = 300
    schedule: str = "constant"  # see optarena.schedules
    warmup: float = 0.0  # warmup fraction of the steps (warmup-* schedules)
    clip_grad_norm: float | None = None  # clip each run's total gradient norm to this (torch's clip_grad_norm_)

    def __post_init__(self) -> None:
        # Normalise to a plain sorted dict of floats (bools stay bools: they select code paths, e.g.
        # bias_correction) so that equal trials have equal keys.
        hparams = {k: v if isinstance(v, bool) else float(v) for k, v in sorted(dict(self.hparams).items())}
        object.__setattr__(self, "hparams", hparams)
        if self.steps < 1:
            raise ValueError(f"steps must be >= 1, got {self.steps}")
        schedules.check(self.schedule, self.warmup)
        object.__setattr__(self, "warmup", float(self.warmup) if self.schedule != "constant" else 0.0)
        object.__setattr__(self, "clip_grad_norm", check_clip_grad_norm(self.clip_grad_norm))

    def __hash__(self) -> int:
        return hash(self.run_key)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Trial) and self.run_key == other.run_key

    def as_dict(self) -> dict[str, Any]:
        return {
            "problem": self.problem,
            "optimizer": self.optimizer,
            "convention": self.convention,
            "hparams": dict(self.hparams),
            "seed": int(self.seed),
            "steps": int(self.steps),
            "schedule": self.schedule,
            "warmup": self.warmup,
            "clip_grad_norm": self.clip_grad_norm,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "Trial":
        return cls(d["problem"], d["optimizer"], d["convention"], d["hparams"], d["seed"], d["steps"],
                   d.get("schedule", "constant"), d.get("warmup", 0.0), d.get("clip_grad_norm"))

    @property
    def run_key(self) -> str:
        """sha256 of the trial, the optarena version and `code_fingerprint()` (32 hex digits).

        Cached on the instance (the trial is frozen); the same in every process."""
        cached = self.__dict__.get("_run_key")
        if cached is None:
            payload = json.dumps({**self.as_dict(), "version": __version__, "code": code_fingerprint()},
                                 sort_keys=True)
            cached = hashlib.sha256(payload.encode()).hexdigest()[:32]
            object.__setattr__(self, "_run_key", cached)
        return cached


@functools.lru_cache(maxsize=1)
def code_fingerprint() -> str:
    """sha256 (16 hex digits) of the source files in `RESULT_CODE`, read once per process.

    Files are hashed by their path relative to the package and their bytes, in sorted order, so
    the fingerprint does not depend on where the package is installed."""
    root = Path(__file__).resolve().parent
    files: list[Path] = []
    for name in RESULT_CODE:
        target = root / name
        files.extend(sorted(target.rglob("*.py")) if target.is_dir() else [target])
    digest = hashlib.sha256()
    for path in sorted(files):
        digest.update(path.relative_to(root).as_posix().encode() + b"\0")
        digest.update(path.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


@dataclass
class RunResult:
    """What a trial produced.

    `curve` maps "step" and every metric of `Problem.evaluate` (e.g. "train_loss", "val_loss") to
    its values at the evaluation points; `final` holds the metrics after the last step. `trace`
    holds optional per-step recordings (e.g. "params" for 2-D trajectories) asked for by a study.
    """

    trial: Trial
    status: str
    curve: dict[str, list[float]] = field(default_factory=dict)
    final: dict[str, float] = field(default_factory=dict)
    wall_time: float = 0.0
    diverged_at: int | None = None
    error: str | None = None
    trace: dict[str, list] = field(default_factory=dict)
    # Seconds per training step of this run, measured in its batch: "model" (forward and backward,
    # the batch's time shared over its runs) and "update" (its optimizer group's update, shared
    # over the group's runs).
    step_time: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ValueError(f"status must be one of {STATUSES}, got {self.status!r}")

    def as_dict(self) -> dict[str, Any]:
        return {
            "trial": self.trial.as_dict(),
            "run_key": self.trial.run_key,
            "status": self.status,
            "curve": self.curve,
            "final": self.final,
            "wall_time": self.wall_time,
            "diverged_at": self.diverged_at,
            "error": self.error,
            "trace": self.trace,
            "step_time": self.step_time,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "RunResult":
        return cls(
            trial=Trial.from_dict(d["trial"]),
            status=d["status"],
            curve=d.get("curve") or {},
            final=d.get("final") or {},
            wall_time=d.get("wall_time", 0.0),
            diverged_at=d.get("diverged_at"),
            error=d.get("error"),
            trace=d.get("trace") or {},
            step_time=d.get("step_time") or {},
        )
