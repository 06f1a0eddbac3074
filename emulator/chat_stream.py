"""The chat bridge's upstream calls are streamed, and put back together here.

Streaming is what makes a cancel reach the model: llama-server went on generating for a
non-streamed request whose client had hung up (measured: its slot stayed busy until the
answer was done), but stops at once when the stream's connection closes; vLLM and Ollama
behave the same. The chunks (`choices[0].delta`: content pieces, tool calls by index,
`finish_reason`, and `usage` in the last chunk with `stream_options.include_usage`) are
folded into the shape of a non-streamed `chat.completion`, so the rest of the bridge reads
one answer either way. A server that ignores `stream` and answers JSON is read as is.
"""

from __future__ import annotations

import json
from typing import Any

import httpx


class StreamError(RuntimeError):
    """The upstream reported an error inside its stream (after its 200)."""


async def read_completion(reply: httpx.Response) -> dict[str, Any]:
    """One `chat.completion` dict from a streamed (or plain JSON) answer."""
    if "text/event-stream" not in reply.headers.get("content-type", ""):
        data: dict[str, Any] = json.loads(await reply.aread())
        return data
    content: list[str] = []
    calls: dict[int, dict[str, Any]] = {}
    finish: str | None = None
    usage: dict[str, Any] | None = None
    async for line in reply.aiter_lines():
        if not line.startswith("data:"):
            continue
        payload = line[len("data:") :].strip()
        if payload == "[DONE]":
            break
        chunk = json.loads(payload)
        if "error" in chunk:
            raise StreamError(f"Upstream stream error: {json.dumps(chunk['error'])[:500]}")
        usage = chunk.get("usage") or usage
        for choice in chunk.get("choices") or []:
            finish = choice.get("finish_reason") or finish
            delta = choice.get("delta") or {}
            if delta.get("content"):
                content.append(delta["content"])
            for piece in delta.get("tool_calls") or []:
                _merge_call(calls.setdefault(int(piece.get("index", 0)), {}), piece)
    message: dict[str, Any] = {"role": "assistant", "content": "".join(content) or None}
    if calls:
        message["tool_calls"] = [calls[i] for i in sorted(calls)]
    return {
        "object": "chat.completion",
        "choices": [{"index": 0, "message": message, "finish_reason": finish}],
        "usage": usage,
    }


def _merge_call(call: dict[str, Any], piece: dict[str, Any]) -> None:
    """A tool call arrives in pieces: its id and name once, its arguments in fragments."""
    if piece.get("id"):
        call["id"] = piece["id"]
    call["type"] = "function"
    function = call.setdefault("function", {"name": "", "arguments": ""})
    fragment = piece.get("function") or {}
    if fragment.get("name"):
        function["name"] += fragment["name"]
    if fragment.get("arguments"):
        function["arguments"] += fragment["arguments"]
