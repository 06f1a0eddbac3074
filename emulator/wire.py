"""Wire helpers: OpenAI-shaped errors, JSON bodies, strict field checks, list pages."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

try:  # orjson (the bench extra) is optional: ~5x faster dumps when benchmarks push thousands
    import orjson

    def _dumps(obj: Any) -> bytes:
        dumped: bytes = orjson.dumps(obj)  # typed either way: Any when orjson is absent
        return dumped

except ImportError:  # pragma: no cover - depends on the environment

    def _dumps(obj: Any) -> bytes:
        return json.dumps(obj, separators=(",", ":")).encode()


class ApiError(Exception):
    """An error answered as `{"error": {message, type, param, code}}` with an HTTP status."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.param = param
        self.code = code
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        return {
            "error": {
                "message": self.message,
                "type": self.type,
                "param": self.param,
                "code": self.code,
            }
        }


def json_response(obj: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(_dumps(obj), status_code=status, headers=headers, media_type="application/json")


def error_response(err: ApiError) -> Response:
    return json_response(err.body(), err.status, err.headers)


def not_found(kind: str, ident: str, param: str | None = None) -> ApiError:
    """OpenAI's wording for unknown ids: "No thread found with id 'thread_x'."."""
    return ApiError(404, f"No {kind} found with id '{ident}'.", param=param)


async def read_json(request: Request) -> dict[str, Any]:
    """The request body as an object; an empty body is `{}` (the SDK sends none on cancel)."""
    raw = await request.body()
    if not raw.strip():
        return {}
    try:
        body = json.loads(raw)
    except ValueError as exc:
        raise ApiError(
            400,
            "We could not parse the JSON body of your request. (HINT: This likely means you "
            "aren't using your HTTP library correctly. The OpenAI API expects a JSON payload, "
            "but what was sent was not valid JSON.)",
        ) from exc
    if not isinstance(body, dict):
        raise ApiError(400, "Invalid body: expected a JSON object.")
    return body


def reject_unknown(body: dict[str, Any], allowed: frozenset[str]) -> None:
    """Assistants-style strictness: the first undefined field is a 400."""
    for key in body:
        if key not in allowed:
            raise ApiError(400, f"Unrecognized request argument supplied: {key}")


def reject_unknown_parameter(body: dict[str, Any], allowed: frozenset[str]) -> None:
    """Responses-style strictness (the newer API words it differently)."""
    for key in body:
        if key not in allowed:
            raise ApiError(400, f"Unknown parameter: '{key}'.", param=key, code="unknown_parameter")


_JSON_TYPES: dict[type, str] = {
    str: "a string",
    bool: "a boolean",
    int: "an integer",
    float: "a decimal",
    dict: "an object",
    list: "an array",
}


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    return _JSON_TYPES.get(type(value), type(value).__name__)


def check_type(
    body: dict[str, Any], name: str, types: tuple[type, ...], *, nullable: bool = True
) -> None:
    """400 when a present field has the wrong JSON type (bool is not a number here)."""
    if name not in body:
        return
    value = body[name]
    if value is None and nullable:
        return
    ok = isinstance(value, types) and not (isinstance(value, bool) and bool not in types)
    if not ok:
        expected = _JSON_TYPES.get(types[0], types[0].__name__)
        raise ApiError(
            400,
            f"Invalid type for '{name}': expected {expected}, but got {_kind(value)} instead.",
            param=name,
            code="invalid_type",
        )


def check_metadata(body: dict[str, Any], name: str = "metadata") -> dict[str, str]:
    """Metadata as OpenAI validates it: at most 16 string pairs, keys <= 64, values <= 512."""
    value = body.get(name)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ApiError(
            400,
            f"Invalid type for '{name}': expected an object, but got {_kind(value)} instead.",
            param=name,
            code="invalid_type",
        )
    if len(value) > 16:
        raise ApiError(
            400,
            f"Invalid '{name}': too many properties. Expected an object with at most 16 "
            f"properties, but got an object with {len(value)} properties instead.",
            param=name,
            code="object_above_max_properties",
        )
    for key, item in value.items():
        if len(key) > 64:
            raise ApiError(
                400,
                f"Invalid '{name}': key too long. Expected a key of at most 64 characters.",
                param=name,
                code="invalid_value",
            )
        if not isinstance(item, str):
            raise ApiError(
                400,
                f"Invalid type for '{name}.{key}': expected a string, but got "
                f"{_kind(item)} instead.",
                param=f"{name}.{key}",
                code="invalid_type",
            )
        if len(item) > 512:
            raise ApiError(
                400,
                f"Invalid '{name}.{key}': string too long. Expected a string with maximum "
                f"length 512, but got a string with length {len(item)} instead.",
                param=f"{name}.{key}",
                code="string_above_max_length",
            )
    return dict(value)


def list_page(
    items: Sequence[dict[str, Any]],
    request: Request,
    *,
    default_order: str = "desc",
    keep: Callable[[dict[str, Any]], bool] | None = None,
) -> dict[str, Any]:
    """One cursor page (`order`, `limit`, `after`, `before`) over items stored oldest first."""
    params = request.query_params
    order = params.get("order", default_order)
    if order not in ("asc", "desc"):
        raise ApiError(
            400,
            f"Invalid value: '{order}'. Supported values are: 'asc' and 'desc'.",
            param="order",
            code="invalid_value",
        )
    try:
        limit = int(params.get("limit", "20"))
    except ValueError:
        raise ApiError(400, "Invalid 'limit': expected an integer.", param="limit") from None
    if not 1 <= limit <= 100:
        raise ApiError(
            400,
            f"Invalid 'limit': integer out of range. Expected a value between 1 and 100, "
            f"but got {limit} instead.",
            param="limit",
            code="integer_out_of_range",
        )
    ordered: Iterable[dict[str, Any]] = items if order == "asc" else reversed(items)
    selected = [it for it in ordered if keep is None or keep(it)]
    after, before = params.get("after"), params.get("before")
    if after:
        idx = next((i for i, it in enumerate(selected) if it["id"] == after), None)
        selected = selected[idx + 1 :] if idx is not None else []
    if before:
        idx = next((i for i, it in enumerate(selected) if it["id"] == before), None)
        selected = selected[:idx] if idx is not None else []
        # `before` pages backwards: keep the items closest to the cursor.
        page = selected[-limit:]
        has_more = len(selected) > limit
    else:
        page = selected[:limit]
        has_more = len(selected) > limit
    return {
        "object": "list",
        "data": page,
        "first_id": page[0]["id"] if page else None,
        "last_id": page[-1]["id"] if page else None,
        "has_more": has_more,
    }


MAX_MESSAGE_CHARS = 256_000
"""The Assistants API's limit on one message's text."""


def check_content_length(content: Any) -> None:
    """Refuse a message longer than the API takes, with the API's own 400."""
    length = len(content_text(content))
    if length > MAX_MESSAGE_CHARS:
        raise ApiError(
            400,
            f"Invalid 'content': string too long. Expected a string with maximum length "
            f"{MAX_MESSAGE_CHARS}, but got a string with length {length} instead.",
            param="content",
            code="string_above_max_length",
        )


def content_text(content: Any) -> str:
    """The text of a chat or Responses `content`: a string, or the text of its parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(
            p.get("text", "")
            for p in content
            if isinstance(p, dict) and isinstance(p.get("text"), str)
        )
    return ""
