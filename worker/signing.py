"""Standard Webhooks signatures (as OpenAI signs its webhooks): one place that signs, for
askq's webhooks to users and the emulator's webhooks to askq.

The reference implementation (`standardwebhooks`) signs: HMAC-SHA256 with the decoded
`whsec_` secret over `id.timestamp.body`, sent as `webhook-signature: v1,<base64>`.
"""

from __future__ import annotations

from datetime import UTC, datetime

from standardwebhooks.webhooks import Webhook


def signed_headers(secret: str, message_id: str, now: float, body: str) -> dict[str, str]:
    """The three Standard Webhooks headers for `body`, sent as message `message_id` at
    `now` (epoch s). The secret appears in none of them."""
    when = datetime.fromtimestamp(int(now), UTC)
    return {
        "webhook-id": message_id,
        "webhook-timestamp": str(int(now)),
        "webhook-signature": Webhook(secret).sign(message_id, when, body),
    }
