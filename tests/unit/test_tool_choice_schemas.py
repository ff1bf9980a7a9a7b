"""A forced tool must be named in both wire formats: a 422 at the edge, not a failed job."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from pipelines.translate import anthropic_request_to_openai, openai_request_to_anthropic
from schemas.anthropic import MessagesRequest
from schemas.openai import ChatCompletionRequest

_ANTHROPIC = {"model": "m", "max_tokens": 8, "messages": [{"role": "user", "content": "hi"}]}
_OPENAI = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}


def test_an_anthropic_tool_choice_of_type_tool_without_a_name_is_refused() -> None:
    with pytest.raises(ValidationError, match="needs the tool's name"):
        MessagesRequest.model_validate({**_ANTHROPIC, "tool_choice": {"type": "tool"}})


def test_a_named_anthropic_tool_choice_translates_to_openais_named_function() -> None:
    body = MessagesRequest.model_validate(
        {**_ANTHROPIC, "tool_choice": {"type": "tool", "name": "lookup"}})
    openai_body = anthropic_request_to_openai(body.model_dump(exclude_none=True))
    assert openai_body["tool_choice"] == {"type": "function", "function": {"name": "lookup"}}


def test_an_openai_tool_choice_object_without_a_function_name_is_refused() -> None:
    with pytest.raises(ValidationError):
        ChatCompletionRequest.model_validate({**_OPENAI, "tool_choice": {"type": "function"}})
    with pytest.raises(ValidationError):
        ChatCompletionRequest.model_validate({**_OPENAI, "tool_choice": {"": False}})


def test_a_named_openai_tool_choice_survives_the_job_input_and_reaches_anthropic() -> None:
    request = ChatCompletionRequest.model_validate(
        {**_OPENAI, "tool_choice": {"type": "function", "function": {"name": "lookup"}}})
    anthropic_body = openai_request_to_anthropic(request.job_input())
    assert anthropic_body["tool_choice"] == {"type": "tool", "name": "lookup"}
