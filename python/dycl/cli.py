"""Console entry points: ``dycl-data``, ``dycl-train``, ``dycl-eval``, ``dycl-experiment``.

Each command builds its ``argparse`` parser here and hands the parsed
arguments to its engine (:mod:`dycl.data`, :mod:`dycl.train`,
:mod:`dycl.evaluate`, :mod:`dycl.experiment`). :func:`run_cli` gives every
command the same behaviour on bad input: a one-line ``error: ...`` on stderr
and exit code 2, never a traceback.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence


class CLIError(Exception):
    """A user-facing error: printed as one line, exit code 2."""


def run_cli(
    prog: str,
    build_parser: Callable[[], argparse.ArgumentParser],
    run: Callable[[argparse.Namespace], int | None],
    argv: Sequence[str] | None = None,
) -> int:
    """Parse ``argv``, call ``run`` and map expected failures to exit code 2.

    ``ValueError``, ``FileNotFoundError`` and :class:`CLIError` are the
    expected failures of bad input; they print ``prog: error: message``.
    ``KeyboardInterrupt`` exits with 130. Anything else is a bug and keeps its
    traceback.
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        code = run(args)
    except (CLIError, ValueError, FileNotFoundError, NotADirectoryError, FileExistsError) as exc:
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        print(f"{prog}: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
    return int(code or 0)


# --------------------------------------------------------------------------- dycl-data
# (owned by the data layer: python/dycl/data/)


def data_main(argv: Sequence[str] | None = None) -> int:
    raise SystemExit("dycl-data: not implemented yet")


# --------------------------------------------------------------------------- dycl-train
# (owned by the training engine: python/dycl/train.py)


def train_main(argv: Sequence[str] | None = None) -> int:
    raise SystemExit("dycl-train: not implemented yet")


# --------------------------------------------------------------------------- dycl-eval
# (owned by the evaluation engine: python/dycl/evaluate.py)


def eval_main(argv: Sequence[str] | None = None) -> int:
    raise SystemExit("dycl-eval: not implemented yet")


# --------------------------------------------------------------------------- dycl-experiment
# (owned by the experiment suite: python/dycl/experiment.py)


def experiment_main(argv: Sequence[str] | None = None) -> int:
    raise SystemExit("dycl-experiment: not implemented yet")
