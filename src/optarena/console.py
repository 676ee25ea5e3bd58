"""What every command shares: progress bars, torch's thread count, the device and backend options,
and one convention for errors and exit codes.

Exit codes: 0 done; 2 a usage or input error (one line on stderr naming the option or file and
the cause, nothing written); 1 a run that failed; 130 interrupted (Ctrl-C: one line saying how
many runs are stored and that a rerun resumes, no traceback).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from rich.console import Console

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130
# Models with fewer parameters than this run on one intra-op thread under threads="auto".
SMALL_MODEL = 100_000

stdout = Console()
stderr = Console(stderr=True)


class UsageError(Exception):
    """Bad input from the user (an option, a file): exit 2 with this one-line message."""


class RunFailed(Exception):
    """The work itself failed (e.g. every run of a comparison raised): exit 1 with this message."""


def error(command: str, message: str, detail: str = "") -> None:
    """One line on stderr, ``optarena <command>: error: <message>``, then `detail` (a traceback) if any."""
    stderr.print(f"optarena {command}: error: {message}", markup=False, highlight=False, soft_wrap=True)
    if detail:
        stderr.print(detail.rstrip(), markup=False, highlight=False, soft_wrap=True)


class Parser(argparse.ArgumentParser):
    """argparse with errors as one line on stderr (``<prog>: error: <message>``), exit 2: no usage
    block, so a bad option reads like every other optarena error."""

    def error(self, message: str) -> None:  # type: ignore[override]
        print(f"{self.prog}: error: {message} (see {self.prog} --help)", file=sys.stderr)
        raise SystemExit(EXIT_USAGE)


# ---- devices and threads ----------------------------------------------------------------------------


def device(value: str) -> str:
    """argparse type for --device: cpu, cuda or cuda:N, and CUDA only where torch sees a GPU."""
    import torch

    text = str(value).strip().lower()
    kind, _, index = text.partition(":")
    if kind not in ("cpu", "cuda") or (index and not index.isdigit()) or (kind == "cpu" and index):
        raise argparse.ArgumentTypeError(f"{value!r} is not a device; use cpu, cuda or cuda:N")
    if kind == "cuda":
        if not torch.cuda.is_available():
            raise argparse.ArgumentTypeError(f"{value!r}: torch sees no CUDA device here; use --device cpu")
        if index and int(index) >= torch.cuda.device_count():
            raise argparse.ArgumentTypeError(f"{value!r}: only {torch.cuda.device_count()} CUDA device(s) here")
    return text


def check_device(value: str) -> str:
    """`device` for library callers: ValueError instead of an argparse error."""
    try:
        return device(value)
    except argparse.ArgumentTypeError as e:
        raise ValueError(f"device {e}") from None


def threads_option(value: str) -> int | str:
    """argparse type for --threads: an integer >= 1, or "auto"."""
    if value == "auto":
        return value
    if str(value).isdigit() and int(value) >= 1:
        return int(value)
    raise argparse.ArgumentTypeError(f"must be 'auto' or an integer >= 1, got {value!r}")


@contextmanager
def threads(count: int | str | None, n_parameters: int | None = None) -> Iterator[None]:
    """torch's intra-op thread count inside the block, restored after. "auto": one thread for
    models under SMALL_MODEL parameters (their ops are too small for threads to pay for their
    synchronisation; on a busy machine threads that wait for each other made small models up to
    80 times slower, measured), torch's own setting otherwise. None leaves it alone."""
    import torch

    if count == "auto":
        count = 1 if n_parameters is None or n_parameters < SMALL_MODEL else None
    if count is None:
        yield
        return
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        raise ValueError(f"threads must be an integer >= 1, 'auto' or None, got {count!r}")
    before = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)


# ---- execution options shared by `claims` and `compare` ---------------------------------------------


def add_execution_arguments(parser: argparse.ArgumentParser, threads_default: str = "1") -> None:
    """--device, --threads, --backend, --address, --workers: where and how runs execute."""
    parser.add_argument("--device", type=device, default="cpu", help="cpu, cuda or cuda:N (default cpu)")
    parser.add_argument("--threads", type=threads_option, default=threads_default,
                        help=f"torch intra-op threads per process: an integer or 'auto' (default {threads_default})")
    parser.add_argument("--backend", choices=("local", "ray"), default="local",
                        help="local: this process (default); ray: batches as Ray tasks (pip install optarena[ray])")
    parser.add_argument("--address", default=None,
                        help="with --backend ray: join the Ray cluster at this address (default: start one on this machine)")
    parser.add_argument("--workers", type=int, default=None,
                        help="with --backend ray on a local cluster: worker processes (default: one per core)")


def backend_from(args: argparse.Namespace):
    """The backend the options ask for; UsageError when it cannot be had (e.g. ray not installed)."""
    from optarena import backends

    if args.backend == "local":
        if args.address is not None:
            raise UsageError("--address needs --backend ray")
        return backends.LocalBackend()
    try:
        return backends.get("ray", address=args.address, workers=args.workers, threads=args.threads)
    except ImportError as e:
        raise UsageError(str(e)) from None


# ---- progress ---------------------------------------------------------------------------------------


@contextmanager
def progress(total: int, label: str, enabled: bool = True) -> Iterator[Callable[[int], None]]:
    """A rich progress bar of runs done / total with ETA on stderr; yields advance(n). A total
    that turns out too small grows (some studies make more runs than they planned)."""
    if not enabled:
        yield lambda n: None
        return
    if not stderr.is_terminal:  # a log file: a plain line now and then instead of a live bar
        yield _log_lines(total, label)
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    bar = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("runs"),
                   TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(), console=stderr, transient=False)
    task = bar.add_task(label, total=total or None)

    def advance(n: int) -> None:
        done = bar.tasks[task].completed + n
        bar.update(task, completed=done, total=max(done, bar.tasks[task].total or 0))

    advance.describe = lambda text: bar.update(task, description=text)  # type: ignore[attr-defined]
    with bar:
        yield advance


LOG_EVERY_S = 60.0
"""Seconds between progress lines when stderr is not a terminal (a log file, CI)."""


def _log_lines(total: int, label: str) -> Callable[[int], None]:
    """advance(n) that writes ``<label>: <done>/<total> runs (<p>%), <elapsed> elapsed, ETA <eta>``
    to stderr at most every `LOG_EVERY_S` seconds, and once when the total is reached."""
    started = _now()
    state = {"done": 0, "total": total, "last": started, "label": label, "final": False}

    def line(now: float) -> str:
        done, total = state["done"], max(state["total"], state["done"])
        elapsed = now - started
        eta = f", ETA {_minutes(elapsed / done * (total - done))}" if 0 < done < total else ""
        share = f" ({100 * done / total:.0f}%)" if total else ""
        return f"{state['label']}: {done:,}/{total:,} runs{share}, {_minutes(elapsed)} elapsed{eta}"

    def advance(n: int) -> None:
        state["done"] += n
        now = _now()
        finished = bool(state["total"]) and state["done"] >= state["total"]
        if now - state["last"] >= LOG_EVERY_S or (finished and not state["final"]):
            stderr.print(line(now), markup=False, highlight=False, soft_wrap=True)
            state["last"], state["final"] = now, finished

    advance.describe = lambda text: state.update(label=text)  # type: ignore[attr-defined]
    return advance


def _now() -> float:
    return time.monotonic()


def _minutes(seconds: float) -> str:
    return f"{seconds / 60:.1f} min" if seconds >= 60 else f"{seconds:.0f} s"


# ---- running a command ------------------------------------------------------------------------------


def run_command(command: str, body: Callable[[], int | None], on_interrupt: Callable[[], str] | None = None) -> int:
    """Run a command's body with the exit-code convention of this module: UsageError -> one line
    on stderr, exit 2; RunFailed -> one line, exit 1; Ctrl-C -> one line from `on_interrupt()`
    (how many runs are stored), exit 130, no traceback. Other exceptions are bugs and propagate."""
    try:
        return int(body() or EXIT_OK)
    except UsageError as e:
        error(command, str(e))
        return EXIT_USAGE
    except RunFailed as e:
        error(command, str(e))
        return EXIT_FAILED
    except KeyboardInterrupt:
        message = "interrupted; rerun to resume"
        if on_interrupt is not None:
            # The summary (e.g. "interrupted; 12 runs stored, rerun to resume") must not turn the
            # one line into a traceback when it cannot be had (a store closed mid-write, ...).
            try:
                message = on_interrupt()
            except Exception:
                pass
        # The leading newline ends a progress bar's line, so the message starts a line of its own.
        print(f"\noptarena {command}: {message}", file=sys.stderr)
        return EXIT_INTERRUPTED
