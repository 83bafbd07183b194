"""Recovery, measured (issue 5): how long a tradestats worker takes to become ready again.

The talk behind tradestats claims that restoring state from the changelog takes time in
proportion to the state, that a StatefulSet's persistent volume makes restarts fast, and that
small changelog segments keep restores short. This package measures those claims on the
project's real local broker, with real ``tradestats worker`` processes:

* warm restarts (SIGTERM and SIGKILL, data directory intact),
* cold restarts (data directory emptied: everything comes back from the changelog),
* a standby takeover (two workers, ``STANDBY_REPLICAS=1``, the owner of some partitions killed),

at several state sizes, plus cold restores under different changelog ``segment.bytes``.

Run ``python -m bench.recovery --help`` from the repository root (it reuses the scenario
harness under ``tests/``). It is a measurement, not a test: nothing here asserts a time.
"""
