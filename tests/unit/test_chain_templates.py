"""Chain templates: save-time checking names the step and the reference; rendering is one
pass; run inputs are checked against the chain's fields."""

from __future__ import annotations

from typing import Any

import pytest

from pipelines.chain_templates import (
    ChainDefinitionInvalid,
    check_definition,
    check_inputs,
    references,
    render,
)
from pipelines.errors import InvalidInput


def p(name: str, position: int, template: str, **extra: Any) -> dict[str, Any]:
    return {"name": name, "position": position, "template": template, **extra}


FIELDS = [{"name": "topic"}, {"name": "tone", "required": False}]


def test_references_are_listed_once_in_order_with_spaces_allowed_inside_braces() -> None:
    assert references("{{ topic }} and {{Analyze Data}} then {{topic}}") == [
        "topic", "Analyze Data"]


def test_a_chain_whose_references_are_fields_and_earlier_prompts_checks_out() -> None:
    check_definition(FIELDS, [p("A", 1, "{{topic}}"), p("B", 1, "{{tone}}"),
                              p("C", 2, "{{A}} {{B}} {{topic}}")])


def test_an_unknown_reference_names_the_step_and_the_reference() -> None:
    with pytest.raises(ChainDefinitionInvalid) as caught:
        check_definition(FIELDS, [p("A", 1, "{{topic}} {{nope}}")])
    assert caught.value.details == {"prompt": "A", "reference": "nope"}
    assert "'A'" in caught.value.message and "'nope'" in caught.value.message


def test_a_reference_to_a_prompt_at_the_same_position_is_refused() -> None:
    with pytest.raises(ChainDefinitionInvalid) as caught:
        check_definition(FIELDS, [p("A", 1, "{{topic}}"), p("B", 1, "{{A}}")])
    assert caught.value.details == {"prompt": "B", "reference": "A"}
    assert "same position" in caught.value.message


def test_a_reference_to_a_later_prompt_is_refused() -> None:
    with pytest.raises(ChainDefinitionInvalid) as caught:
        check_definition(FIELDS, [p("A", 1, "{{B}}"), p("B", 2, "{{topic}}")])
    assert caught.value.details == {"prompt": "A", "reference": "B"}
    assert "later position" in caught.value.message


def test_a_cycle_is_named_as_a_cycle() -> None:
    with pytest.raises(ChainDefinitionInvalid) as caught:
        check_definition(FIELDS, [p("A", 1, "{{C}}"), p("B", 2, "{{A}}"), p("C", 3, "{{B}}")])
    details = caught.value.details
    assert details["cycle"][0] == details["cycle"][-1]
    assert set(details["cycle"]) == {"A", "B", "C"}
    assert "cycle" in caught.value.message


def test_a_prompt_referring_to_itself_is_a_cycle() -> None:
    with pytest.raises(ChainDefinitionInvalid) as caught:
        check_definition(FIELDS, [p("A", 1, "{{A}}")])
    assert caught.value.details["cycle"] == ["A", "A"]


def test_context_needs_knowledge_ids() -> None:
    with pytest.raises(ChainDefinitionInvalid) as caught:
        check_definition(FIELDS, [p("A", 1, "{{context}}")])
    assert caught.value.details == {"prompt": "A", "reference": "context"}
    check_definition(FIELDS, [p("A", 1, "{{context}}", knowledge_ids=["k"])])


def test_references_in_system_prompts_are_checked_too() -> None:
    with pytest.raises(ChainDefinitionInvalid) as caught:
        check_definition(FIELDS, [p("A", 1, "{{topic}}", system_prompt="{{ghost}}")])
    assert caught.value.details == {"prompt": "A", "reference": "ghost"}


def test_duplicate_and_clashing_names_are_refused() -> None:
    with pytest.raises(ChainDefinitionInvalid, match="Two prompts"):
        check_definition(FIELDS, [p("A", 1, "x"), p("A", 2, "y")])
    with pytest.raises(ChainDefinitionInvalid, match="both an input field and a prompt"):
        check_definition(FIELDS, [p("topic", 1, "x")])


def test_rendering_is_one_pass_so_values_holding_braces_stay_text() -> None:
    out = render("{{topic}} / {{A}} / {{context}}", {"topic": "{{A}}", "A": 3})
    assert out == "{{A}} / 3 / {{context}}"


def test_inputs_are_checked_for_required_unknown_type_length_and_count() -> None:
    fields = [{"name": "topic", "max_length": 5}, {"name": "n", "type": "number"},
              {"name": "opt", "required": False}]
    assert check_inputs(fields, {"topic": "abc", "n": 2}, max_fields=5) == {
        "topic": "abc", "n": 2, "opt": ""}
    for bad, field in (({"n": 1}, "inputs.topic"), ({"topic": "abcdef", "n": 1}, "inputs.topic"),
                       ({"topic": "a", "n": "x"}, "inputs.n"),
                       ({"topic": "a", "n": 1, "zzz": 1}, "inputs.zzz")):
        with pytest.raises(InvalidInput) as caught:
            check_inputs(fields, bad, max_fields=5)
        assert caught.value.details["field"] == field
    with pytest.raises(InvalidInput) as caught:
        check_inputs(fields, {"topic": "a", "n": 1, "opt": "x"}, max_fields=2)
    assert caught.value.details == {"limit": "input_fields", "max": 2, "found": 3}
