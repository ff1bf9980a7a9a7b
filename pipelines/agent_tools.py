"""The built-in tools an agent's turn runs in the worker: `calculator`, `current_time`,
`http_get`, and the JSON Schemas the model sees for them (`knowledge_search` runs in the
worker, which holds the embedders; its schema is here with the others).

Each tool takes the model's arguments (a dict) and returns text or raises ToolFailed, whose
message goes back to the model as the result's `error`. The calculator walks the parsed
expression itself (no eval) with bounded powers, so no input can run code or hang a worker.
"""

from __future__ import annotations

import ast
import math
import operator
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import httpx

from pipelines import outbound
from pipelines.errors import DomainError


class ToolFailed(Exception):
    """A tool could not do what the model asked; the message is the result's error."""


BUILTIN_SPECS: dict[str, dict[str, Any]] = {
    "calculator": {
        "description": "Evaluate an arithmetic expression (+ - * / // % ** and parentheses, "
                       "functions sqrt, log, exp, sin, cos, tan, abs, round, min, max).",
        "parameters": {"type": "object", "required": ["expression"],
                       "properties": {"expression": {"type": "string"}}},
    },
    "current_time": {
        "description": "The current date and time, in UTC or the IANA time zone given.",
        "parameters": {"type": "object",
                       "properties": {"timezone": {"type": "string"}}},
    },
    "knowledge_search": {
        "description": "Search the agent's knowledge bases; returns numbered passages "
                       "with their sources.",
        "parameters": {"type": "object", "required": ["query"],
                       "properties": {"query": {"type": "string"},
                                      "limit": {"type": "integer", "minimum": 1,
                                                "maximum": 20}}},
    },
    "http_get": {
        "description": "Fetch a URL on one of the allowed hosts with GET; returns the body "
                       "as text (truncated).",
        "parameters": {"type": "object", "required": ["url"],
                       "properties": {"url": {"type": "string"}}},
    },
}

_MAX_EXPRESSION_CHARS = 500
_MAX_EXPONENT = 10_000
_MAX_MAGNITUDE = 1e300
_BINARY = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul,
           ast.Div: operator.truediv, ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod,
           ast.Pow: operator.pow}
_UNARY = {ast.UAdd: operator.pos, ast.USub: operator.neg}
_FUNCTIONS = {"sqrt": math.sqrt, "log": math.log, "exp": math.exp, "sin": math.sin,
              "cos": math.cos, "tan": math.tan, "abs": abs, "round": round, "min": min,
              "max": max}
_CONSTANTS = {"pi": math.pi, "e": math.e}


def calculator(arguments: dict[str, Any]) -> str:
    """The value of `arguments["expression"]`, computed without eval."""
    expression = arguments.get("expression")
    if not isinstance(expression, str) or not expression.strip():
        raise ToolFailed("calculator needs an 'expression' string")
    if len(expression) > _MAX_EXPRESSION_CHARS:
        raise ToolFailed(f"the expression is longer than {_MAX_EXPRESSION_CHARS} characters")
    try:
        tree = ast.parse(expression.strip(), mode="eval")
        value = _evaluate(tree.body)
    except ToolFailed:
        raise
    except SyntaxError:
        raise ToolFailed("the expression is not valid arithmetic") from None
    except (ArithmeticError, ValueError, TypeError) as exc:
        raise ToolFailed(f"the expression cannot be computed: {exc}") from None
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e15:
        value = int(value)
    return str(value)


def _evaluate(node: ast.AST) -> float | int:
    if isinstance(node, ast.Constant) and isinstance(node.value, int | float) \
            and not isinstance(node.value, bool):
        return node.value
    if isinstance(node, ast.Name) and node.id in _CONSTANTS:
        return _CONSTANTS[node.id]
    if isinstance(node, ast.UnaryOp) and type(node.op) in _UNARY:
        unary: Callable[[Any], Any] = _UNARY[type(node.op)]  # type: ignore[assignment]
        return unary(_evaluate(node.operand))  # type: ignore[no-any-return]
    if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
        left, right = _evaluate(node.left), _evaluate(node.right)
        if isinstance(node.op, ast.Pow) and (abs(right) > _MAX_EXPONENT or (
                abs(left) > 1 and abs(right) * math.log10(abs(left)) > 300)):
            raise ToolFailed("the power is too large")
        value = _BINARY[type(node.op)](left, right)
        if isinstance(value, int | float) and abs(value) > _MAX_MAGNITUDE:
            raise ToolFailed("the result is too large")
        return value  # type: ignore[no-any-return]
    if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
            and node.func.id in _FUNCTIONS and not node.keywords and len(node.args) <= 10):
        function: Callable[..., Any] = _FUNCTIONS[node.func.id]  # type: ignore[assignment]
        value = function(*(_evaluate(arg) for arg in node.args))
        if not isinstance(value, int | float):
            raise ToolFailed("the function did not give a number")
        return value
    raise ToolFailed("only numbers, arithmetic operators and the listed functions are allowed")


def current_time(arguments: dict[str, Any], now: datetime | None = None) -> str:
    """ISO 8601 time now in the requested zone (UTC by default)."""
    zone_name = arguments.get("timezone") or "UTC"
    try:
        zone = ZoneInfo(str(zone_name))
    except (ZoneInfoNotFoundError, ValueError):
        raise ToolFailed(f"unknown time zone '{zone_name}'") from None
    return (now or datetime.now(UTC)).astimezone(zone).isoformat()


async def http_get(arguments: dict[str, Any], *, allowed_hosts: list[str],
                   policy: outbound.OutboundPolicy, max_bytes: int, timeout_s: float,
                   client: httpx.AsyncClient | None = None) -> str:
    """GET a URL whose host is on `allowed_hosts`, at an address `policy` allows (pinned,
    so DNS cannot change it between check and connect), no redirects, body cut at
    `max_bytes`."""
    url = arguments.get("url")
    if not isinstance(url, str) or not url:
        raise ToolFailed("http_get needs a 'url' string")
    try:
        target = await outbound.check_async(url, policy)
    except DomainError as exc:
        raise ToolFailed(exc.message) from None
    host = (target.url.host or "").lower()
    if host not in {h.strip().lower() for h in allowed_hosts}:
        raise ToolFailed(f"the host '{host}' is not on this agent's allow-list")
    extensions: dict[str, Any] = {}
    if target.url.scheme == "https":
        extensions["sni_hostname"] = target.url.host
    own = client is None
    http = client or httpx.AsyncClient(trust_env=False)
    try:
        request = http.build_request("GET", target.pinned_url,
                                     headers=target.request_headers({}),
                                     timeout=timeout_s, extensions=extensions)
        response = await http.send(request, stream=True, follow_redirects=False)
        try:
            body = bytearray()
            async for piece in response.aiter_bytes():
                body.extend(piece)
                if len(body) >= max_bytes:
                    break
        finally:
            await response.aclose()
    except httpx.HTTPError as exc:
        raise ToolFailed(f"the request failed: {type(exc).__name__}") from None
    finally:
        if own:
            await http.aclose()
    text = bytes(body[:max_bytes]).decode("utf-8", errors="replace")
    return f"HTTP {response.status_code}\n{text}"
