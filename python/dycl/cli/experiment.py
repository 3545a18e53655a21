"""``dycl-experiment list|run|report`` (the engine: :mod:`dycl.experiment`)."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from .common import CLIError, run_cli

_EXPERIMENT_EPILOG = """\
examples:
  dycl-experiment list --suite paper-mini                    # the plan
  dycl-experiment list --suite paper-mini --output runs/     # the plan, each run's state and the ETA
  dycl-experiment run --suite paper-mini --output runs/      # run (or continue) everything, then report
  dycl-experiment report --output runs/ --docs docs/         # tables + figures from what has finished
  dycl-experiment run --suite paper-full --data-dir DA-Campus --output runs-full --device cuda

run is resumable: finished runs are skipped, an interrupted training continues from
its last epoch (dycl-train --resume), missing re-rankings are scored from the saved
embeddings. Everything goes under --output (the synthetic campus in data/, one
folder per run, the report in report/).
"""


def _build_experiment_parser() -> argparse.ArgumentParser:
    from ..experiment import SUITES

    p = argparse.ArgumentParser(
        prog="dycl-experiment",
        description="The paper in miniature: run the comparisons of Tables II/III and Fig. 6 as a resumable "
                    "suite of dycl-train runs, score every run with each re-ranking, and write the report.",
        epilog=_EXPERIMENT_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = p.add_subparsers(dest="command", required=True, metavar="{list,run,report,table4}")
    names = ", ".join(SUITES)

    def common(cmd: argparse.ArgumentParser, output_required: bool) -> None:
        cmd.add_argument("--suite", default="paper-mini", metavar="NAME",
                         help=f"the experiment plan: {names} (default paper-mini)")
        cmd.add_argument("--output", required=output_required, metavar="DIR",
                         help="the suite folder (data, runs, report)")
        cmd.add_argument("--data-dir", metavar="PATH",
                         help="a dataset instead of the suite's synthetic campus (required by paper-full)")

    listing = sub.add_parser("list", help="show the plan (and, with --output, each run's state and the ETA)")
    common(listing, output_required=False)
    run = sub.add_parser("run", help="run every unfinished run, score the re-rankings, write the report")
    common(run, output_required=True)
    run.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                     help="training device (default auto: CUDA when available)")
    run.add_argument("--workers", type=int, metavar="N",
                     help="DataLoader workers per run (default: the suite's setting)")
    run.add_argument("--max-runs", type=int, metavar="N",
                     help="train at most N runs in this call, then stop (continue with the same command)")
    run.add_argument("--no-report", dest="report", action="store_false", help="do not regenerate the report")
    run.add_argument("--docs", metavar="DIR",
                     help="also update DIR/results.md (its generated block) and DIR/img/results_*.png")
    report = sub.add_parser("report", help="regenerate the report from the finished runs under --output")
    common(report, output_required=True)
    report.add_argument("--docs", metavar="DIR",
                        help="also update DIR/results.md (its generated block) and DIR/img/results_*.png")
    table4 = sub.add_parser("table4", help="Table IV in miniature: single-domain hierarchical retrieval on "
                                           "synthetic shapes, plain / k-reciprocal / MSRerank")
    table4.add_argument("--trained", action="store_true",
                        help="embeddings of a ResNet-18 trained on the hierarchy (a minute or two on a CPU) "
                             "instead of fixed pixel features (a second)")
    table4.add_argument("--seed", type=int, default=0, help="the synthetic images' seed (default 0)")
    return p


def _run_table4(args: argparse.Namespace) -> int:
    from ..experiment.table4 import format_table4, shapes_task, table4_miniature, trained_shapes_task

    if args.seed < 0:
        raise CLIError(f"--seed: must be >= 0, got {args.seed}")
    task = trained_shapes_task(seed=args.seed) if args.trained else shapes_task(seed=args.seed)
    print(format_table4(table4_miniature(task=task), task.source))
    return 0


def _run_experiment(args: argparse.Namespace) -> int:
    from ..experiment import format_plan, get_suite, report_suite, run_suite, suite_states

    if args.command == "table4":
        return _run_table4(args)
    suite = get_suite(args.suite)
    if args.command == "list":
        states = None
        if args.output is not None:
            states = suite_states(suite, args.output, args.data_dir)
        print(format_plan(suite, states, output=args.output))
        return 0
    if args.command == "report":
        written = report_suite(suite, args.output, data_dir=args.data_dir, docs=args.docs)
        print(f"wrote {', '.join(str(p) for p in written.values())}")
        return 0
    for flag, value in (("--workers", args.workers), ("--max-runs", args.max_runs)):
        if value is not None and value < 0:
            raise CLIError(f"{flag}: must be >= 0, got {value}")
    states = run_suite(suite, args.output, data_dir=args.data_dir, device=args.device, workers=args.workers,
                       max_runs=args.max_runs, report=args.report, docs=args.docs, progress=True)
    failed = [s for s in states if s.state == "failed"]
    if failed:
        raise CLIError(f"{len(failed)} run(s) failed, first {failed[0].run.name}: {failed[0].message}")
    return 0


def experiment_main(argv: Sequence[str] | None = None) -> int:
    """``dycl-experiment list|run|report`` (see ``dycl-experiment -h`` and :mod:`dycl.experiment`)."""
    import os

    # OpenMP threads that spin while waiting for each other waste most of their time when other
    # processes share the cores (a ResNet-18 step at 48 px: 4.2 s spinning vs 0.72 s passive on two busy
    # cores). Read when torch starts, so set before anything imports it; an explicit setting wins.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    return run_cli("dycl-experiment", _build_experiment_parser, _run_experiment, argv)
