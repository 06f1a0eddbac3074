"""askq worker side: `celery -A worker worker` finds the Celery app here as `worker.app`."""

from __future__ import annotations

from typing import Any


def __getattr__(name: str) -> Any:
    # Lazy, so importing worker.tools or worker.settings never builds the Celery app.
    if name in ("app", "celery"):
        from worker.application import app

        return app
    raise AttributeError(name)
