"""The faust layer: the app, its agent and table, the processing pipeline, web views, metrics.

Thin wiring around :mod:`tradestats.core`, which holds all the aggregation logic.
"""
