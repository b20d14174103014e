"""A guard against JSON nested so deep that parsing it recurses out of the stack: the web's
middleware applies it to every JSON body, the SES webhook to SNS's body and the SES
notification inside it."""

from __future__ import annotations

import json

# No body this service takes nests deeper than 2; JSON nested beyond this is refused with 422
# before any route parses it: Python's parser, and pydantic after it, recurse once per level.
MAX_JSON_DEPTH = 32


def json_too_deep(body: bytes | str, limit: int = MAX_JSON_DEPTH) -> bool:
    """True if the JSON text nests arrays and objects more than `limit` deep.

    Only a body with more than `limit` brackets is parsed here (a real request has a handful);
    its depth is then measured without recursion. Invalid JSON is left for the route to refuse.
    """
    opening = ("[", "{") if isinstance(body, str) else (b"[", b"{")
    if body.count(opening[0]) + body.count(opening[1]) <= limit:  # type: ignore[arg-type]
        return False
    try:
        data = json.loads(body)
    except RecursionError:
        return True
    except ValueError:
        return False
    stack: list[tuple[object, int]] = [(data, 0)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, dict | list):
            if depth >= limit:
                return True
            children = value.values() if isinstance(value, dict) else value
            stack.extend((child, depth + 1) for child in children)
    return False
