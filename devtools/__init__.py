"""Development tooling: the local Kafka broker and the demo (not part of the ``tradestats`` wheel).

Run from the project root, where ``devtools`` is importable: ``python -m devtools.kafka``,
``python -m devtools.demo``.
"""
