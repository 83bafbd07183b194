"""``python -m tradestats`` is the ``tradestats`` command."""

from tradestats.cli import main

main()
