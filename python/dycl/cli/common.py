"""What every command shares: one-line errors with exit code 2, flag names in the engines' messages."""

from __future__ import annotations

import argparse
import contextlib
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence

from .._errors import error_line, os_error_line


class CLIError(Exception):
    """A user-facing error: printed as one line, exit code 2."""


@contextlib.contextmanager
def flag_errors(flags: dict[str, str] | None = None, known: Iterable[str] | None = None) -> Iterator[None]:
    """Say the command-line flag where an engine's ``ValueError`` names its argument.

    The engines own their checks and name arguments as the Python API does
    (``"lambda_value: must be in [0, 1], got 2.0"``); the command line only
    translates the name (``"--lambda: must be in [0, 1], got 2.0"``). ``flags``
    maps names whose flag differs; names in ``known`` become ``--name-with-dashes``.
    """
    flags = flags or {}
    try:
        yield
    except ValueError as exc:
        name, sep, rest = str(exc).partition(":")
        if sep and name in flags:
            raise CLIError(f"{flags[name]}:{rest}") from exc
        if sep and known is not None and name in known:
            raise CLIError(f"--{name.replace('_', '-')}:{rest}") from exc
        if sep and known is None and name.isidentifier():
            raise CLIError(f"--{name.replace('_', '-')}:{rest}") from exc
        raise


def run_cli(
    prog: str,
    build_parser: Callable[[], argparse.ArgumentParser],
    run: Callable[[argparse.Namespace], int | None],
    argv: Sequence[str] | None = None,
) -> int:
    """Parse ``argv``, call ``run`` and map expected failures to exit code 2.

    Expected failures print one line, ``prog: error: message``, and exit 2:
    bad input (``ValueError`` and :class:`CLIError`, also when a DataLoader
    worker raised it: its original message, with the file, is shown), the
    machine saying no (``OSError``: a full disk, a read-only folder, a missing
    file; ``MemoryError``: too large for this machine). ``KeyboardInterrupt``
    prints ``interrupted`` and exits 130 (temporary files are already removed
    by the writers). Anything else is a bug and keeps its traceback.
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        code = run(args)
    except (CLIError, ValueError, MemoryError) as exc:
        print(f"{prog}: error: {error_line(exc)}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"{prog}: error: {os_error_line(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
    return int(code or 0)


__all__ = ["CLIError", "flag_errors", "run_cli"]
