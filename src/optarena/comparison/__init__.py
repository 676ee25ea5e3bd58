"""`optarena compare`: the fair comparison of the optimizers on a user's own model and data.

Every optimizer gets the same tuning budget over its search space (`optarena.tuning`; the learning
rate, log-uniform over `tuning.LR_RANGE`), selected on held-out loss with seed 0; the chosen
setting and the convention's defaults are then rerun over seeds 1..K (`optarena.study`). An
optimizer's result is the better of the two (both are in its budget). The recommendation is the
optimizer with the lowest mean held-out loss over those seeds, or the list of leaders when the
paired Student-t interval of their difference includes 0 (`stats.separable`, 95%: at most 5% false
positives for any number of seeds, where a percentile bootstrap over 2-3 seeds gave 23-48%). An
optimizer whose result diverged or failed on any seed ranks below every one that did not. Each row
also gives steps to target (the first evaluated step reaching the best loss any optimizer reached,
relaxed by 5%; median over seeds) and the measured seconds per step; the reason notes a chosen value
at the edge of the search space and a leader that is as good within the noise and cheaper per step.

"all" means the article's eight (sgd, momentum, adagrad, rmsprop, adam, adadelta, nadam, ftrl;
``--optimizers article``) and today's contenders (lion, adafactor, muon, schedulefree_adamw, soap,
lamb; ``--optimizers contenders``), each where it has the chosen convention.
FTRL-Proximal is a per-coordinate rule that applies to any differentiable model (Keras offers it for
every model); it was made for sparse linear models, and the comparison shows what it does on yours.
Under the pytorch convention, which has no FTRL (torch.optim has none), FTRL is left out.
"adamw" may be named explicitly.

The problem file (``optarena compare FILE.py``) defines ``model() -> nn.Module``,
``data() -> (train, val)``, optionally ``loss(output, target)`` and the constants ``batch_size``
and ``steps``; see `optarena.problems.user` for what each may be.

The package: `api` (``compare``, ``run_comparison`` and the checks of their settings), `result`
(``Comparison``: the numbers, the recommendation, comparison.json and the report), `html` (the
report's sections from ``templates/``), `problem_file` and `cli` (``optarena compare FILE.py``).
"""

from optarena.comparison.api import (EIGHT, OPTIMIZERS, check_settings, check_tune, compare, make_setup,
                                     problem_from_file, resolve_optimizers, run_comparison)
from optarena.comparison.cli import add_arguments, main
from optarena.comparison.problem_file import ProblemFile, load_problem_file
from optarena.comparison.result import CONFIDENCE, TARGET_SLACK, Comparison, error_line

__all__ = ["CONFIDENCE", "EIGHT", "OPTIMIZERS", "TARGET_SLACK", "Comparison", "ProblemFile", "add_arguments",
           "check_settings", "check_tune", "compare", "error_line", "load_problem_file", "main", "make_setup",
           "problem_from_file", "resolve_optimizers", "run_comparison"]
