"""``python -m loadtest.bench``: run the benchmark suite (see :mod:`loadtest.bench.suite`)."""

from __future__ import annotations

import sys

from loadtest.bench.suite import main

if __name__ == "__main__":
    sys.exit(main())
