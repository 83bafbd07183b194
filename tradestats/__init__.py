"""tradestats: live trade statistics over hopping windows, on faust-streaming and RocksDB."""

__version__ = "0.1.0"
