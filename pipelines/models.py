"""Which models exist and how to reach them.

For now the built-in development models only; the Postgres-backed registry (admin-editable,
seeded from settings) slots in behind the same two functions.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pipelines.errors import ModelNotFound
from pipelines.ports import ChatModel


@dataclass(frozen=True, slots=True)
class ModelInfo:
    id: str
    provider: str
    upstream_model: str
    context_window: int
    owned_by: str
    description: str = ""
    capabilities: tuple[str, ...] = ("chat", "streaming")
    input_price_per_mtok: float = 0.0
    output_price_per_mtok: float = 0.0
    status: str = "available"
    extra: dict[str, Any] = field(default_factory=dict)

    def as_openai(self, created: int = 0) -> dict[str, Any]:
        """The OpenAI `model` object plus Switchyard's fields."""
        return {
            "id": self.id,
            "object": "model",
            "created": created,
            "owned_by": self.owned_by,
            "provider": self.provider,
            "context_window": self.context_window,
            "capabilities": list(self.capabilities),
            "pricing": {
                "input_per_mtok": self.input_price_per_mtok,
                "output_per_mtok": self.output_price_per_mtok,
            },
            "status": self.status,
            "description": self.description,
        }


DEV_MODELS: dict[str, ModelInfo] = {
    "dev/echo": ModelInfo(
        id="dev/echo", provider="dev", upstream_model="echo", context_window=1_000_000,
        owned_by="switchyard-dev",
        description="Development model: streams back the last user message word by word.",
    ),
    "dev/lorem": ModelInfo(
        id="dev/lorem", provider="dev", upstream_model="lorem", context_window=1_000_000,
        owned_by="switchyard-dev",
        description="Development model: streams max_tokens words of lorem ipsum (default 16).",
    ),
}


def list_models() -> list[ModelInfo]:
    return list(DEV_MODELS.values())


def get_model(model_id: str) -> ModelInfo:
    try:
        return DEV_MODELS[model_id]
    except KeyError:
        raise ModelNotFound(f"The model '{model_id}' does not exist.") from None


def chat_model(model_id: str) -> ChatModel:
    """A provider bound to `model_id`, ready to stream."""
    info = get_model(model_id)
    if info.provider == "dev":
        from pipelines.providers.dev import DevChatModel

        return DevChatModel(info.id)
    raise ModelNotFound(f"The model '{model_id}' has no provider configured.")
