import json

import pytest

from pipelines.errors import InvalidInput
from pipelines.translate import (
    DEFAULT_ANTHROPIC_MAX_TOKENS,
    anthropic_request_to_openai,
    anthropic_stop_reason_to_openai,
    openai_finish_reason_to_anthropic,
    openai_request_to_anthropic,
)

WEATHER_TOOL_OPENAI = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather for a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    },
}
WEATHER_TOOL_ANTHROPIC = {
    "name": "get_weather",
    "description": "Weather for a city",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}},
}


def tool_conversation_openai() -> list[dict]:
    return [
        {"role": "user", "content": "Weather in Paris and Rome?"},
        {
            "role": "assistant",
            "content": "Checking.",
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
                },
                {
                    "id": "call_2",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city": "Rome"}'},
                },
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
        {"role": "tool", "tool_call_id": "call_2", "content": "rainy"},
    ]


def test_system_and_developer_messages_are_hoisted_into_the_anthropic_system_prompt():
    body = {
        "model": "m",
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "developer", "content": [{"type": "text", "text": "Use French."}]},
            {"role": "user", "content": "Hello"},
        ],
    }
    out = openai_request_to_anthropic(body)
    assert out["system"] == "Be brief.\n\nUse French."
    assert out["messages"] == [{"role": "user", "content": [{"type": "text", "text": "Hello"}]}]


def test_max_tokens_defaults_when_absent_and_prefers_max_completion_tokens():
    messages = [{"role": "user", "content": "x"}]
    assert (
        openai_request_to_anthropic({"messages": messages})["max_tokens"]
        == DEFAULT_ANTHROPIC_MAX_TOKENS
    )
    assert (
        openai_request_to_anthropic({"messages": messages}, default_max_tokens=7)["max_tokens"] == 7
    )
    both = {"messages": messages, "max_tokens": 10, "max_completion_tokens": 20}
    assert openai_request_to_anthropic(both)["max_tokens"] == 20


def test_sampling_stop_and_user_fields_map_to_their_anthropic_names():
    body = {
        "messages": [{"role": "user", "content": "x"}],
        "temperature": 1.7,
        "top_p": 0.9,
        "stop": "END",
        "user": "u-42",
    }
    out = openai_request_to_anthropic(body)
    assert out["temperature"] == 1.0  # Anthropic's range ends at 1
    assert out["top_p"] == 0.9
    assert out["stop_sequences"] == ["END"]
    assert out["metadata"] == {"user_id": "u-42"}


def test_data_url_images_become_base64_sources_and_http_images_url_sources():
    body = {
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "What is this?"},
                    {"type": "image_url", "image_url": {"url": "data:image/jpeg;base64,QUJD"}},
                    {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}},
                ],
            }
        ]
    }
    blocks = openai_request_to_anthropic(body)["messages"][0]["content"]
    assert blocks[1] == {
        "type": "image",
        "source": {"type": "base64", "media_type": "image/jpeg", "data": "QUJD"},
    }
    assert blocks[2] == {
        "type": "image",
        "source": {"type": "url", "url": "https://example.com/cat.png"},
    }


def test_tool_calls_become_tool_use_blocks_and_tool_messages_share_one_result_turn():
    out = openai_request_to_anthropic({"messages": tool_conversation_openai()})
    assistant, results = out["messages"][1], out["messages"][2]
    assert assistant["content"] == [
        {"type": "text", "text": "Checking."},
        {"type": "tool_use", "id": "call_1", "name": "get_weather", "input": {"city": "Paris"}},
        {"type": "tool_use", "id": "call_2", "name": "get_weather", "input": {"city": "Rome"}},
    ]
    assert results == {
        "role": "user",
        "content": [
            {"type": "tool_result", "tool_use_id": "call_1", "content": "sunny"},
            {"type": "tool_result", "tool_use_id": "call_2", "content": "rainy"},
        ],
    }
    assert len(out["messages"]) == 3


def test_tools_and_tool_choice_translate_to_anthropic_shapes():
    base = {"messages": [{"role": "user", "content": "x"}], "tools": [WEATHER_TOOL_OPENAI]}
    assert openai_request_to_anthropic(base)["tools"] == [WEATHER_TOOL_ANTHROPIC]
    choices = {
        "auto": {"type": "auto"},
        "required": {"type": "any"},
        "none": {"type": "none"},
    }
    for openai_choice, anthropic_choice in choices.items():
        out = openai_request_to_anthropic(base | {"tool_choice": openai_choice})
        assert out["tool_choice"] == anthropic_choice
    named = {"type": "function", "function": {"name": "get_weather"}}
    out = openai_request_to_anthropic(base | {"tool_choice": named, "parallel_tool_calls": False})
    assert out["tool_choice"] == {
        "type": "tool",
        "name": "get_weather",
        "disable_parallel_tool_use": True,
    }


def test_tool_call_arguments_that_are_not_json_are_rejected_as_invalid_input():
    messages = tool_conversation_openai()
    messages[1]["tool_calls"][0]["function"]["arguments"] = "{not json"
    with pytest.raises(InvalidInput):
        openai_request_to_anthropic({"messages": messages})


def test_anthropic_system_blocks_become_one_system_message():
    body = {
        "model": "claude",
        "max_tokens": 100,
        "system": [{"type": "text", "text": "One."}, {"type": "text", "text": "Two."}],
        "messages": [{"role": "user", "content": "Hi"}],
    }
    out = anthropic_request_to_openai(body)
    assert out["messages"] == [
        {"role": "system", "content": "One.\n\nTwo."},
        {"role": "user", "content": "Hi"},
    ]
    assert out["max_tokens"] == 100
    assert out["model"] == "claude"


def test_anthropic_images_become_image_url_parts():
    body = {
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "Look"},
                    {
                        "type": "image",
                        "source": {"type": "base64", "media_type": "image/png", "data": "QUJD"},
                    },
                    {"type": "image", "source": {"type": "url", "url": "https://x.test/a.png"}},
                ],
            }
        ]
    }
    parts = anthropic_request_to_openai(body)["messages"][0]["content"]
    assert parts == [
        {"type": "text", "text": "Look"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,QUJD"}},
        {"type": "image_url", "image_url": {"url": "https://x.test/a.png"}},
    ]


def test_anthropic_tool_use_and_tool_result_become_tool_calls_and_tool_messages():
    body = {
        "messages": [
            {"role": "user", "content": "Weather?"},
            {
                "role": "assistant",
                "content": [
                    {"type": "text", "text": "Checking."},
                    {"type": "tool_use", "id": "t1", "name": "get_weather", "input": {"c": 1}},
                ],
            },
            {
                "role": "user",
                "content": [
                    {
                        "type": "tool_result",
                        "tool_use_id": "t1",
                        "content": [{"type": "text", "text": "sunny"}],
                    },
                    {"type": "text", "text": "Thanks, and tomorrow?"},
                ],
            },
        ]
    }
    messages = anthropic_request_to_openai(body)["messages"]
    assert messages[1] == {
        "role": "assistant",
        "content": "Checking.",
        "tool_calls": [
            {
                "id": "t1",
                "type": "function",
                "function": {"name": "get_weather", "arguments": json.dumps({"c": 1})},
            }
        ],
    }
    assert messages[2] == {"role": "tool", "tool_call_id": "t1", "content": "sunny"}
    assert messages[3] == {
        "role": "user",
        "content": [{"type": "text", "text": "Thanks, and tomorrow?"}],
    }


def test_anthropic_request_options_map_to_openai_names():
    body = {
        "messages": [{"role": "user", "content": "x"}],
        "max_tokens": 5,
        "temperature": 0.2,
        "top_p": 0.5,
        "stop_sequences": ["###"],
        "metadata": {"user_id": "u-1"},
        "stream": True,
        "tools": [WEATHER_TOOL_ANTHROPIC],
        "tool_choice": {"type": "any", "disable_parallel_tool_use": True},
    }
    out = anthropic_request_to_openai(body)
    assert out["temperature"] == 0.2 and out["top_p"] == 0.5
    assert out["stop"] == ["###"]
    assert out["user"] == "u-1"
    assert out["stream"] is True and out["stream_options"] == {"include_usage": True}
    assert out["tools"] == [WEATHER_TOOL_OPENAI]
    assert out["tool_choice"] == "required"
    assert out["parallel_tool_calls"] is False
    named = anthropic_request_to_openai(body | {"tool_choice": {"type": "tool", "name": "f"}})
    assert named["tool_choice"] == {"type": "function", "function": {"name": "f"}}


def test_a_tool_conversation_survives_a_round_trip_through_anthropic_format():
    original = {"model": "m", "messages": tool_conversation_openai(), "max_tokens": 50}
    back = anthropic_request_to_openai(openai_request_to_anthropic(original))
    assert [m["role"] for m in back["messages"]] == ["user", "assistant", "tool", "tool"]
    assert [c["id"] for c in back["messages"][1]["tool_calls"]] == ["call_1", "call_2"]
    assert json.loads(back["messages"][1]["tool_calls"][1]["function"]["arguments"]) == {
        "city": "Rome"
    }
    assert back["messages"][3] == {"role": "tool", "tool_call_id": "call_2", "content": "rainy"}


def test_finish_reasons_map_both_ways():
    assert anthropic_stop_reason_to_openai("end_turn") == "stop"
    assert anthropic_stop_reason_to_openai("max_tokens") == "length"
    assert anthropic_stop_reason_to_openai("tool_use") == "tool_calls"
    assert anthropic_stop_reason_to_openai("stop_sequence") == "stop"
    assert anthropic_stop_reason_to_openai(None) is None
    assert openai_finish_reason_to_anthropic("stop") == "end_turn"
    assert openai_finish_reason_to_anthropic("length") == "max_tokens"
    assert openai_finish_reason_to_anthropic("tool_calls") == "tool_use"
