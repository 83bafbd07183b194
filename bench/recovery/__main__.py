"""``python -m bench.recovery``: see :mod:`bench.recovery.cli`."""

from bench.recovery.cli import main

raise SystemExit(main())
