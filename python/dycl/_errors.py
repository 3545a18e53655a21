"""The one line of an error that a person needs to read."""

from __future__ import annotations


def error_line(exc: BaseException) -> str:
    """The first line of ``exc``'s message; for an error a DataLoader worker re-raised, the original message.

    A worker's error arrives as ``Caught CorruptImageError in DataLoader worker process 1.`` followed
    by the original traceback; its last line holds the message that names the file.
    """
    text = str(exc).strip()
    if text.startswith("Caught ") and "Original Traceback" in text:
        last = text.splitlines()[-1]  # "CorruptImageError: /data/x.jpg: cannot decode ..."
        _, sep, message = last.partition(": ")
        return message if sep else last
    return text.splitlines()[0] if text else type(exc).__name__


def os_error_line(exc: OSError) -> str:
    """``/x/last.pt.tmp: No space left on device`` rather than ``[Errno 28] No space left on device: ...``."""
    reason = exc.strerror or error_line(exc)
    return f"{exc.filename}: {reason}" if exc.filename else reason


__all__ = ["error_line", "os_error_line"]
