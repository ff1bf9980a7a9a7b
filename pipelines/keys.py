"""Every Redis key and channel name, built in this one place.

Per-job keys share a `{job_id}` hash tag so they land in one Redis Cluster slot, which the
publish script needs (it touches several of them atomically).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Keys:
    namespace: str

    def events(self, job_id: str) -> str:
        return f"{self.namespace}:job:{{{job_id}}}:events"

    def seq(self, job_id: str) -> str:
        return f"{self.namespace}:job:{{{job_id}}}:seq"

    def cancel(self, job_id: str) -> str:
        return f"{self.namespace}:job:{{{job_id}}}:cancel"

    def event_bytes(self, job_id: str) -> str:
        """Bytes of event data the job has published (capped by the publish script)."""
        return f"{self.namespace}:job:{{{job_id}}}:bytes"

    def channel(self, job_id: str) -> str:
        return f"{self.namespace}:job:{{{job_id}}}:live"

    def workers(self) -> str:
        """Sorted set of live worker processes, scored by their last heartbeat (ms)."""
        return f"{self.namespace}:workers"

    def worker_info(self, worker_id: str) -> str:
        return f"{self.namespace}:worker:{worker_id}"

    def audit(self) -> str:
        """Stream of operator actions (pipelines/audit.py), capped."""
        return f"{self.namespace}:audit"

    def paused_queues(self) -> str:
        """Set of queue names operators paused: workers take no message from them."""
        return f"{self.namespace}:queues:paused"

    def request_totals(self, day: str) -> str:
        """Hash of one UTC day's HTTP requests across API processes (`YYYY-MM-DD`)."""
        return f"{self.namespace}:requests:{day}"

    def sweeper_lock(self) -> str:
        return f"{self.namespace}:sweeper:lock"

    def auth_revocations(self) -> str:
        """Channel of revocation notices (a user id each); every API process drops that
        user's cached credentials, so a revoked key, session or user stops everywhere."""
        return f"{self.namespace}:auth:revoked"

    def rate_limit_prefix(self) -> str:
        """Prefix under which the `limits` library keeps its counters."""
        return f"{self.namespace}:rl"

    def concurrency(self, limit_key: str) -> str:
        """Sorted set of a key's concurrency leases (api/leases.py), scored by expiry (ms)."""
        return f"{self.namespace}:conc:{limit_key}"

    def webauthn_challenge(self, challenge: str) -> str:
        """A passkey ceremony's challenge (base64url), single-use, expiring
        (pipelines/passkeys.py)."""
        return f"{self.namespace}:webauthn:{challenge}"

    def token_budget(self, key_id: str, day: str) -> str:
        """Tokens a key has spent on one UTC day (`YYYY-MM-DD`)."""
        return f"{self.namespace}:budget:{key_id}:{day}"

    def webhook_owner(self, owner_id: str) -> str:
        """Whether an owner has webhook subscriptions ("1"/"0"), cached so that jobs of
        owners without any skip the query (pipelines/webhook_events.py)."""
        return f"{self.namespace}:webhooks:owner:{owner_id}"

    @property
    def dramatiq_namespace(self) -> str:
        return f"{self.namespace}:dq"

    def dramatiq_messages(self, queue_name: str) -> str:
        """Dramatiq's hash of a queue's messages, queued and in flight (until acked)."""
        return f"{self.dramatiq_namespace}:{queue_name}.msgs"

    def wake(self, queue_name: str) -> str:
        """List an idle consumer blocks on; producers push to it after enqueueing."""
        return f"{self.namespace}:wake:{queue_name}"

    def dramatiq_queue(self, queue_name: str) -> str:
        return f"{self.dramatiq_namespace}:{queue_name}"
