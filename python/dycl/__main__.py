"""``python -m dycl COMMAND ...``: the console commands without their scripts.

``COMMAND`` is ``train``, ``eval``, ``data``, ``experiment``, ``index``, ``localize`` or
``export`` (as ``dycl-train``, ``dycl-eval``, ...). This is the entry point for ``torchrun``, which starts a
module on every process::

    torchrun --nproc-per-node 4 -m dycl train --data-dir DA-Campus --output runs/ddp
    torchrun --nproc-per-node 4 -m dycl eval --checkpoint runs/ddp/last.pt --data-dir DA-Campus \
             --output runs/ddp/eval/metrics.json        # embedding sharded over the processes
"""

from __future__ import annotations

import sys

from .cli import main

if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
