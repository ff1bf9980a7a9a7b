"""Agents (a model with instructions, tools and knowledge), their sessions and items.

Tools are either built-ins the worker runs (`calculator`, `current_time`, `knowledge_search`,
`http_get`) or client-defined functions with JSON Schema parameters, which end the turn
with `requires_action` until the client posts their results. Sessions take AmaStudio's
body (`agentId`); a message runs one turn as an `agent` job.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from schemas.fields import EntityId

BUILTIN_TOOLS = ("calculator", "current_time", "knowledge_search", "http_get")
_TOOL_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


class BuiltinTool(BaseModel):
    """A tool the worker runs; `http_get` needs `allowed_hosts` (nothing else is reached)."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["calculator", "current_time", "knowledge_search", "http_get"]
    allowed_hosts: list[str] | None = Field(default=None, max_length=100)
    approval_required: bool = False

    @model_validator(mode="after")
    def _hosts_for_http_only(self) -> BuiltinTool:
        if self.type == "http_get" and not self.allowed_hosts:
            raise ValueError("http_get needs a non-empty allowed_hosts list")
        if self.type != "http_get" and self.allowed_hosts is not None:
            raise ValueError("allowed_hosts applies to http_get only")
        return self


class FunctionSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=64)
    description: str | None = Field(default=None, max_length=4000)
    parameters: dict[str, Any] = Field(default_factory=lambda: {"type": "object",
                                                                 "properties": {}})

    @model_validator(mode="after")
    def _valid(self) -> FunctionSpec:
        if not _TOOL_NAME.match(self.name):
            raise ValueError("a function name has 1-64 letters, digits, '_' or '-'")
        if self.name in BUILTIN_TOOLS:
            raise ValueError(f"'{self.name}' is the name of a built-in tool")
        if self.parameters.get("type", "object") != "object":
            raise ValueError("function parameters must be a JSON Schema object")
        return self


class FunctionTool(BaseModel):
    """A client-defined tool: the turn stops with `requires_action` when the model calls it."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["function"]
    function: FunctionSpec
    approval_required: bool = False


AgentTool = Annotated[BuiltinTool | FunctionTool, Field(discriminator="type")]


class AgentLimits(BaseModel):
    model_config = ConfigDict(extra="forbid")

    max_steps: int = Field(default=8, ge=1, le=50)
    max_tokens: int | None = Field(default=None, ge=1, le=200_000)
    timeout_s: float = Field(default=300.0, gt=0, le=3600)


class AgentCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=200)
    model: str = Field(min_length=1, max_length=200)
    instructions: str | None = Field(default=None, max_length=100_000)
    tools: list[AgentTool] = Field(default_factory=list, max_length=64)
    knowledge_ids: list[EntityId] = Field(default_factory=list, max_length=50)
    limits: AgentLimits = Field(default_factory=AgentLimits)

    @model_validator(mode="after")
    def _unique_tools(self) -> AgentCreate:
        names = [tool_name(t) for t in self.tools]
        if len(names) != len(set(names)):
            raise ValueError("tool names must be unique")
        return self


def tool_name(tool: BuiltinTool | FunctionTool) -> str:
    return tool.function.name if isinstance(tool, FunctionTool) else tool.type


class AgentRead(BaseModel):
    id: str
    object: Literal["agent"] = "agent"
    name: str
    model: str
    instructions: str | None
    tools: list[dict[str, Any]]
    knowledge_ids: list[str]
    limits: dict[str, Any]
    created_at: datetime
    updated_at: datetime


class AgentList(BaseModel):
    object: Literal["list"] = "list"
    data: list[AgentRead]


class SessionCreate(BaseModel):
    """AmaStudio's body: `agentId` (or `agent_id`), a name, optional metadata."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    agent_id: EntityId = Field(alias="agentId")
    name: str = Field(default="Session", min_length=1, max_length=200)
    metadata: dict[str, Any] = Field(default_factory=dict)


class ItemRead(BaseModel):
    id: str
    seq: int
    type: Literal["message", "reasoning", "tool_call", "tool_result", "approval"]
    role: str | None = None
    content: str | None = None
    data: dict[str, Any]
    job_id: str | None = None
    created_at: datetime


class SessionRead(BaseModel):
    id: str
    object: Literal["agent.session"] = "agent.session"
    agentId: str  # noqa: N815 - AmaStudio's field name
    name: str
    metadata: dict[str, Any]
    status: str
    last_job_id: str | None
    created_at: datetime
    updated_at: datetime
    items: list[ItemRead] | None = None


class SessionList(BaseModel):
    object: Literal["list"] = "list"
    data: list[SessionRead]


class MessageCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    role: Literal["user"] = "user"
    content: str = Field(min_length=1, max_length=200_000)
    stream: bool = False


class ToolResultCreate(BaseModel):
    """Stack 2.9's tool result shape, answering one `requires_action` call."""

    model_config = ConfigDict(extra="forbid")

    tool_call_id: str = Field(min_length=1, max_length=200)
    output: Any = None
    error: str | None = Field(default=None, max_length=100_000)
    stream: bool = False


class ApprovalCreate(BaseModel):
    """The client's decision on one tool call that needs approval."""

    model_config = ConfigDict(extra="forbid")

    tool_call_id: str = Field(min_length=1, max_length=200)
    approved: bool
    reason: str | None = Field(default=None, max_length=2000)
    stream: bool = False


class AgentWsStart(BaseModel):
    """A WebSocket chat `start` that runs a turn of an agent session instead of a chat."""

    agent_session_id: EntityId
    content: str = Field(min_length=1, max_length=200_000)


class AgentTurnJob(BaseModel):
    """An `agent` job's input: the session whose turn runs (its items are the state)."""

    session_id: EntityId
