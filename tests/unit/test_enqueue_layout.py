"""The API's pipelined enqueue must write exactly what Dramatiq's own enqueue writes."""

from __future__ import annotations

import inspect

from dramatiq import Message
from dramatiq.brokers.redis import RedisBroker

from api.enqueue import DISPATCH_LUA, dispatch_args


def test_dispatch_args_follow_the_layout_of_the_installed_dramatiq() -> None:
    # RedisBroker._dispatch builds: command, timestamp, queue, broker id, heartbeat timeout,
    # dead message ttl, maintenance flag, max unpack size, then the command's own args.
    source = inspect.getsource(RedisBroker._dispatch)
    source = source[source.index("args = ["):]
    order = ["command", "timestamp", "queue_name", "self.broker_id", "self.heartbeat_timeout",
             "self.dead_message_ttl", "self._should_do_maintenance(command)",
             "self._max_unpack_size()", "*args"]
    positions = [source.index(name) for name in order]
    assert positions == sorted(positions)
    assert b'if command == "enqueue" then' in DISPATCH_LUA


def test_dispatch_args_carry_the_message_as_dramatiq_encodes_it() -> None:
    broker = RedisBroker(url="redis://127.0.0.1:1/0", namespace="ns", middleware=[])
    message = Message(queue_name="chat", actor_name="run_chat", args=("job-1",), kwargs={},
                      options={"redis_message_id": "rid-1"})
    args = dispatch_args(broker, message, 1000)
    assert args[0] == "enqueue" and args[2] == "chat" and args[3] == broker.broker_id
    assert args[6] == 0 and args[7] == 1000
    assert args[8] == "rid-1"
    assert Message.decode(args[9]).args == ("job-1",)
