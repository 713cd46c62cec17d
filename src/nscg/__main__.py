"""``python -m nscg``: the ``nscg`` command line (see :mod:`nscg.cli`)."""

from __future__ import annotations

import sys

from nscg.cli import main

__all__ = ["main"]

if __name__ == "__main__":
    sys.exit(main())
