"""An askq tool module: two tools a run may call while it answers.

Enable it on the workers (this folder on PYTHONPATH, or next to where they start):

    export ASKQ_TOOL_MODULES=shop_tools PYTHONPATH=examples
    celery -A worker worker

A job may use every registered tool (the default) or only some: `askq ask ... --tools price`.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from worker.tools import tool

PRICES_EUR = {"apple": 0.5, "bread": 2.25, "coffee": 7.0}
USD_PER_EUR = 1.08


@tool
def price(item: Annotated[str, Field(description="What to price, e.g. 'apple'.")]) -> float:
    """The unit price of an item in the shop, in euros.

    An item the shop does not sell raises KeyError: the model reads the error as the tool's
    output and can answer accordingly; the job does not fail.
    """
    return PRICES_EUR[item.strip().lower()]


@tool
def total(
    item: Annotated[str, Field(description="What to buy, e.g. 'bread'.")],
    quantity: Annotated[int, Field(ge=1, le=1000, description="How many.")],
    currency: Literal["EUR", "USD"] = "EUR",
) -> dict[str, float | str]:
    """What `quantity` of an item costs, in euros or US dollars."""
    amount = price(item) * quantity
    if currency == "USD":
        amount *= USD_PER_EUR
    return {"item": item, "quantity": quantity, "total": round(amount, 2), "currency": currency}
