"""The prediction server's deployable entry point: ``plumbline serve``.

    python serve/app.py [--params params.yaml] [--host 0.0.0.0] [--port 8000]

The serving image's command (serve/Dockerfile). The options, environment and behaviour are
those of ``plumbline serve`` (:mod:`plumbline.cli.serving`, docs/serving.md).
"""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    from plumbline.cli.serving import one_thread_per_process

    # Before plumbline.cli.main, whose other commands' modules import numpy: the thread
    # variables then act as the BLAS loads.
    one_thread_per_process()
    from plumbline.cli.main import main as plumbline

    return plumbline(["serve", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    raise SystemExit(main())
