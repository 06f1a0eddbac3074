"""askq producer side: `from producer import Client`."""

from producer.client import BatchStatus, CancelOutcome, Client

__all__ = ["BatchStatus", "CancelOutcome", "Client"]
