"""Each job kind's input model: the API validates `POST /v1/jobs` with it at the edge and the
worker's actor scaffold validates the stored input with it again, so both read one contract.

Apart from `schemas/jobs.py` because these models live with their own routes' bodies, some
of which import `schemas.jobs`.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

from pydantic import BaseModel

from schemas.agents import AgentTurnJob
from schemas.chains import ChainRunJob, ChainStepJob
from schemas.compare import CompareRequest
from schemas.conversations import PruneJob
from schemas.deployments import DeployJob
from schemas.knowledge import IngestJob
from schemas.openai import ChatCompletionRequest

# None: any JSON object (the no-op job echoes what it is given).
JOB_PAYLOADS: Mapping[str, type[BaseModel] | None] = MappingProxyType({
    "chat": ChatCompletionRequest,
    "noop": None,
    "compare": CompareRequest,
    "prune": PruneJob,
    "ingest": IngestJob,
    "deploy": DeployJob,
    "chain": ChainRunJob,
    "chain_step": ChainStepJob,
    "agent": AgentTurnJob,
})
