"""The faust app, configured from the environment: ``faust -A tradestats.app worker`` runs it."""

from tradestats.service.app import build_app
from tradestats.settings import load_settings

service = build_app(load_settings())
app = service.app
