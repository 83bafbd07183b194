"""The broker-free core: trade validation, window and pane arithmetic, aggregation, wire formats.

Nothing in this package imports faust or talks to Kafka; the service wires it up in
:mod:`tradestats.service`.
"""
