"""The worker process's Celery app, built from the environment's settings at import.

Kept apart from `worker/__init__.py` so that `from worker.tools import tool` in a user's
module does not need valid settings.
"""

from __future__ import annotations

from worker.celery_app import create_app
from worker.settings import get_settings
from worker.tools import load_tool_modules

settings = get_settings()
load_tool_modules(settings.tool_module_names)
app = create_app(settings)
