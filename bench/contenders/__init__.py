"""The contenders. Each app module here runs as its own process; keep this package light:
the Quix Streams app imports it from a virtual environment without the project installed."""
