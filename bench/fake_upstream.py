"""The fake OpenAI-compatible upstream, for benchmarks: it lives in ``tests/support``.

The tests own it (their fault directives define it); benchmarks import it from there, so the
e2e suite does not depend on ``bench/``. ``python -m bench.fake_upstream`` still runs it.
"""

from __future__ import annotations

import sys

from tests.support.fake_upstream import *  # noqa: F403  (the whole public API, as before)
from tests.support.fake_upstream import main

if __name__ == "__main__":
    sys.exit(main())
