"""Chain templates: `{{field}}`, `{{prompt_name}}` and `{{context}}`, checked when a chain is
saved and rendered when its steps are dispatched.

Every reference is resolved at save time, so a run never meets a name it cannot fill: an
unknown name, a prompt at the same or a later position, or a cycle is refused with the
step and the reference named (`ChainDefinitionInvalid`, a 422). Rendering is a single pass
over the template: a value that itself contains `{{…}}` (an input, a model's output) is
inserted as text and never expanded again.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

import orjson

from pipelines.errors import InvalidInput

REFERENCE = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_ \-]*?)\s*\}\}")
CONTEXT = "context"


class ChainDefinitionInvalid(InvalidInput):
    """A chain whose templates or names do not check out; `details` names step and reference."""


def references(template: str) -> list[str]:
    """The names a template refers to, in order of first appearance."""
    return list(dict.fromkeys(match.group(1) for match in REFERENCE.finditer(template)))


def _invalid(message: str, **details: Any) -> ChainDefinitionInvalid:
    return ChainDefinitionInvalid(message, details=details)


def check_definition(input_fields: Sequence[Mapping[str, Any]],
                     prompts: Sequence[Mapping[str, Any]]) -> None:
    """Raise `ChainDefinitionInvalid` unless every name is unique and every reference
    resolves to an input field, a prompt at an earlier position, or (with knowledge_ids)
    `context`."""
    fields = [str(f["name"]) for f in input_fields]
    _unique(fields, "input field")
    names = [str(p["name"]) for p in prompts]
    _unique(names, "prompt")
    clash = sorted(set(fields) & set(names))
    if clash:
        raise _invalid(f"'{clash[0]}' names both an input field and a prompt.", name=clash[0])
    for reserved in (CONTEXT,):
        if reserved in fields or reserved in names:
            raise _invalid(f"'{reserved}' is reserved for retrieved knowledge.", name=reserved)
    position = {str(p["name"]): int(p["position"]) for p in prompts}
    edges: dict[str, list[str]] = {}
    for prompt in prompts:
        name = str(prompt["name"])
        refs = references(str(prompt["template"]))
        if prompt.get("system_prompt"):
            refs += [r for r in references(str(prompt["system_prompt"])) if r not in refs]
        query = (prompt.get("retrieval") or {}).get("query")
        if query:
            refs += [r for r in references(str(query)) if r not in refs]
        edges[name] = [r for r in refs if r in position]
        for ref in refs:
            if ref in fields:
                continue
            if ref == CONTEXT:
                if not prompt.get("knowledge_ids"):
                    raise _invalid(f"Prompt '{name}' uses {{{{context}}}} but has no "
                                   "knowledge_ids.", prompt=name, reference=ref)
                continue
            if ref not in position:
                raise _invalid(f"Prompt '{name}' refers to '{ref}', which is neither an input "
                               "field nor a prompt.", prompt=name, reference=ref)
    cycle = _cycle(edges)
    if cycle:
        raise _invalid(f"Prompts refer to each other in a cycle: {' -> '.join(cycle)}.",
                       prompt=cycle[0], reference=cycle[1], cycle=cycle)
    for prompt in prompts:
        name = str(prompt["name"])
        for ref in edges[name]:
            if position[ref] >= position[name]:
                where = "the same" if position[ref] == position[name] else "a later"
                raise _invalid(f"Prompt '{name}' refers to '{ref}', which runs at {where} "
                               f"position ({position[ref]}); a prompt can use only outputs "
                               "of earlier positions.", prompt=name, reference=ref)


def _unique(names: Sequence[str], what: str) -> None:
    seen: set[str] = set()
    for name in names:
        if name in seen:
            raise _invalid(f"Two {what}s are named '{name}'.", name=name)
        seen.add(name)


def _cycle(edges: Mapping[str, Sequence[str]]) -> list[str] | None:
    """A cycle in the prompt reference graph as [a, b, …, a], or None."""
    state: dict[str, int] = {}  # 1 visiting, 2 done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in edges.get(node, ()):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt)) is not None:
                return found
        path.pop()
        state[node] = 2
        return None

    for node in edges:
        if node not in state and (found := visit(node)) is not None:
            return found
    return None


def as_text(value: Any) -> str:
    """How a value appears in a rendered template: strings as they are, the rest as JSON."""
    if isinstance(value, str):
        return value
    return orjson.dumps(value).decode()


def render(template: str, values: Mapping[str, Any]) -> str:
    """`template` with each `{{name}}` replaced by its value; names without one stay as they
    are (`{{context}}` is filled by the step after retrieval)."""

    def fill(match: re.Match[str]) -> str:
        name = match.group(1)
        if name in values:
            return as_text(values[name])
        return match.group(0)

    return REFERENCE.sub(fill, template)


def check_inputs(input_fields: Sequence[Mapping[str, Any]], inputs: Mapping[str, Any],
                 *, max_fields: int) -> dict[str, Any]:
    """The run's inputs checked against the chain's fields; unknown names are refused."""
    if len(inputs) > max_fields:
        raise InvalidInput(f"A run takes at most {max_fields} input fields; {len(inputs)} "
                           "were given.", details={"limit": "input_fields", "max": max_fields,
                                                    "found": len(inputs)})
    by_name = {str(f["name"]): f for f in input_fields}
    unknown = [name for name in inputs if name not in by_name]
    if unknown:
        raise InvalidInput(f"Unknown input field '{unknown[0]}'.",
                           details={"field": f"inputs.{unknown[0]}"})
    checked: dict[str, Any] = {}
    for name, spec in by_name.items():
        value = inputs.get(name)
        if value is None or value == "":
            if spec.get("required", True):
                raise InvalidInput(f"Input field '{name}' is required.",
                                   details={"field": f"inputs.{name}"})
            checked[name] = ""
            continue
        checked[name] = _checked_value(name, spec, value)
    return checked


def _checked_value(name: str, spec: Mapping[str, Any], value: Any) -> Any:
    kind = spec.get("type", "text")
    if kind == "number":
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise InvalidInput(f"Input field '{name}' must be a number.",
                               details={"field": f"inputs.{name}"})
        return value
    if kind == "boolean":
        if not isinstance(value, bool):
            raise InvalidInput(f"Input field '{name}' must be true or false.",
                               details={"field": f"inputs.{name}"})
        return value
    if not isinstance(value, str):
        raise InvalidInput(f"Input field '{name}' must be a string.",
                           details={"field": f"inputs.{name}"})
    limit = spec.get("max_length")
    if limit is not None and len(value) > int(limit):
        raise InvalidInput(f"Input field '{name}' is longer than its {limit} characters.",
                           details={"field": f"inputs.{name}", "max_length": limit})
    options = spec.get("options")
    if kind == "select" and options and value not in options:
        raise InvalidInput(f"Input field '{name}' must be one of: {', '.join(options)}.",
                           details={"field": f"inputs.{name}"})
    return value
