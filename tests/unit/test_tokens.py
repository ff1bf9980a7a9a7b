import os
import subprocess
import sys
import textwrap
from pathlib import Path

from pipelines.tokens import count_message_tokens, count_tokens, encoding_name, get_encoding

REPO = Path(__file__).resolve().parents[2]


def test_counts_match_tiktokens_published_token_ids():
    # cl100k ids for "hello world" as published by tiktoken's own README/tests.
    assert get_encoding("cl100k_base").encode("hello world") == [15339, 1917]
    assert count_tokens("hello world") == 2


def test_gpt_4o_family_models_use_o200k_and_unknown_models_fall_back_to_cl100k():
    assert encoding_name("gpt-4o-mini") == "o200k_base"
    assert encoding_name("openai/gpt-4o") == "o200k_base"
    assert encoding_name("gpt-4") == "cl100k_base"
    assert encoding_name("claude-sonnet-4") == "cl100k_base"
    assert encoding_name(None) == "cl100k_base"
    assert count_tokens("hello world", "gpt-4o") == 2


def test_special_token_text_in_user_input_is_counted_not_rejected():
    assert count_tokens("<|endoftext|>") > 1


def test_message_count_includes_openais_per_message_overhead():
    # 3 per message + "user" (1) + "hello world" (2) + 3 reply priming.
    assert count_message_tokens([{"role": "user", "content": "hello world"}]) == 9
    with_name = [{"role": "user", "name": "bob", "content": "hello world"}]
    assert count_message_tokens(with_name) == 9 + 1 + count_tokens("bob")


def test_message_count_includes_text_parts_images_and_tool_calls():
    messages = [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "hello world"},
                {"type": "image_url", "image_url": {"url": "https://x.test/a.png"}},
            ],
        },
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [{"function": {"name": "f", "arguments": "{}"}}],
        },
    ]
    user_turn = 3 + count_tokens("user") + count_tokens("hello world") + 85
    assistant_turn = 3 + count_tokens("assistant") + count_tokens("f") + count_tokens("{}")
    assert count_message_tokens(messages) == user_turn + assistant_turn + 3


def test_loading_encodings_never_touches_the_network(tmp_path):
    script = textwrap.dedent(
        """
        import os, socket

        def refuse(*args, **kwargs):
            raise RuntimeError("network access attempted")

        socket.socket = refuse
        socket.create_connection = refuse
        socket.getaddrinfo = refuse

        from pipelines.tokens import count_tokens, get_encoding
        assert count_tokens("hello world") == 2
        assert count_tokens("hello world", "gpt-4o") == 2
        assert get_encoding("o200k_base").n_vocab > 199_000
        assert os.listdir(os.environ["TIKTOKEN_CACHE_DIR"]) == []
        print("offline ok")
        """
    )
    cache = tmp_path / "tiktoken-cache"
    cache.mkdir()
    env = os.environ | {"TIKTOKEN_CACHE_DIR": str(cache), "PYTHONPATH": str(REPO)}
    env.pop("DATA_GYM_CACHE_DIR", None)
    result = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert "offline ok" in result.stdout
