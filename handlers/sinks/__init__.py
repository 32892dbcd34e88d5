"""Sink registry: ``type`` in ``[sinks.NAME]`` → the class that delivers there.

Adding a sink is one module in this package, one line here, and its tests.
"""

from __future__ import annotations

from handlers.sinks.amqp import AmqpSink
from handlers.sinks.base import Sink, SinkConfig
from handlers.sinks.discord import DiscordSink
from handlers.sinks.file import FileSink
from handlers.sinks.http import HttpSink
from handlers.sinks.nats import NatsSink
from handlers.sinks.redis import RedisSink
from handlers.sinks.s3 import S3Sink
from handlers.sinks.slack import SlackSink
from handlers.sinks.sqs import SqsSink

SINKS: dict[str, type[Sink]] = {
    "http": HttpSink,
    "file": FileSink,
    "slack": SlackSink,
    "s3": S3Sink,
    "amqp": AmqpSink,
    "nats": NatsSink,
    "redis": RedisSink,
    "sqs": SqsSink,
    "discord": DiscordSink,
}

__all__ = ["SINKS", "Sink", "SinkConfig"]
