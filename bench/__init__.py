"""The benchmark suite: tradestats against its peers, side by side on one broker and machine.

Run ``python -m bench --help``. This package is imported by the contender processes too
(some in another virtual environment), so importing it must stay free of dependencies.
"""
