"""Console entry points: ``dycl-data``, ``dycl-train``, ``dycl-eval``, ``dycl-experiment``,
``dycl-index``, ``dycl-localize``, ``dycl-export``.

Each command has a module here (``data``, ``train``, ``eval``, ``experiment``;
``localize`` holds the three localization commands) that builds its
``argparse`` parser and hands the parsed arguments to its engine
(:mod:`dycl.data`, :mod:`dycl.train`, :mod:`dycl.evaluate`,
:mod:`dycl.experiment`, :mod:`dycl.localize`). :func:`~dycl.cli.common.run_cli` gives every command
the same behaviour on bad input: a one-line ``error: ...`` on stderr and exit
code 2, never a traceback. :func:`main` is ``python -m dycl COMMAND``.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from .common import CLIError, run_cli
from .data import data_main
from .eval import eval_main
from .experiment import experiment_main
from .localize import export_main, index_main, localize_main
from .train import train_main

_COMMANDS = {"train": train_main, "eval": eval_main, "data": data_main, "experiment": experiment_main,
             "index": index_main, "localize": localize_main, "export": export_main}


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m dycl COMMAND ...`` (and ``torchrun -m dycl train ...``): dispatch to a command."""
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help") or args[0] not in _COMMANDS:
        known = ", ".join(_COMMANDS)
        if args and args[0] not in ("-h", "--help"):
            print(f"dycl: error: unknown command {args[0]!r}; expected one of {known}", file=sys.stderr)
            return 2
        print(f"usage: python -m dycl {{{','.join(_COMMANDS)}}} ...\n\n"
              "Runs dycl-train, dycl-eval, dycl-data, dycl-experiment, dycl-index, dycl-localize or "
              "dycl-export; e.g. under torchrun:\n"
              "  torchrun --nproc-per-node 4 -m dycl train --data-dir DA-Campus --output runs/ddp")
        return 0 if args else 2
    return _COMMANDS[args[0]](args[1:])


__all__ = ["CLIError", "data_main", "eval_main", "experiment_main", "export_main", "index_main",
           "localize_main", "main", "run_cli", "train_main"]
