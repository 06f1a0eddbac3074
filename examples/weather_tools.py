"""A tool for the self-hosted tools example (README, "Tools with a self-hosted model").

Run a worker with it: ASKQ_TOOL_MODULES=examples.weather_tools celery -A worker worker
"""

from __future__ import annotations

from worker.tools import tool

FORECASTS = {"oslo": "light snow, -3 °C", "paris": "sunny, 18 °C", "lima": "cloudy, 21 °C"}


@tool
def get_weather(city: str) -> str:
    """Today's weather in a city."""
    return FORECASTS.get(city.strip().lower(), f"no forecast for {city}")
