"""The paper in miniature: experiment suites, a resumable runner, and the report.

A **suite** (:mod:`~dycl.experiment.suites`) is a plan: the data (a synthetic
campus rendered on first use, or a dataset folder given with ``--data-dir``),
the training settings shared by every run, the **configurations** (loss spec,
loss options, sampler), the **seeds**, and the **re-rankings** every run is
scored with. The runner (:mod:`~dycl.experiment.runner`) trains each
(configuration, seed) with :func:`dycl.train.run_training`, resumes what was
interrupted (:mod:`~dycl.experiment.state` reads where each run stands), and
re-scores the saved embeddings with each re-ranking. The report
(:mod:`~dycl.experiment.report`, statistics in :mod:`~dycl.experiment.stats`)
aggregates the seeds into the paper's tables and figures.
"""

from .report import BEGIN_MARK, END_MARK, default_command, report_markdown, splice_generated, write_report
from .runner import format_plan, progress_line, report_suite, run_suite, score_run, train_run
from .state import (
    RunState,
    config_mismatch,
    estimate_progress,
    planned_overrides,
    resolve_data_dir,
    run_state,
    suite_states,
)
from .stats import TIE, Stat, SuiteResults, beyond_spread, collect_results, consistent_sign
from .suites import (
    PAPER_FULL,
    PAPER_MINI,
    RERANKINGS,
    SMOKE,
    SUITES,
    CampusSpec,
    RunConfig,
    RunSpec,
    Suite,
    get_suite,
)

__all__ = [
    "BEGIN_MARK",
    "END_MARK",
    "PAPER_FULL",
    "PAPER_MINI",
    "RERANKINGS",
    "SMOKE",
    "SUITES",
    "CampusSpec",
    "RunConfig",
    "RunSpec",
    "RunState",
    "Stat",
    "Suite",
    "SuiteResults",
    "TIE",
    "beyond_spread",
    "collect_results",
    "config_mismatch",
    "consistent_sign",
    "default_command",
    "estimate_progress",
    "format_plan",
    "get_suite",
    "planned_overrides",
    "progress_line",
    "report_markdown",
    "report_suite",
    "resolve_data_dir",
    "run_state",
    "run_suite",
    "score_run",
    "splice_generated",
    "suite_states",
    "train_run",
    "write_report",
]
