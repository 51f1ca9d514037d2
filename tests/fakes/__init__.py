"""Fake upstream LLM servers for the test suite, speaking the real wire protocols over real sockets.

Quick use::

    from tests.fakes import OpenAIBackend, Reply, Status, Stream

    with OpenAIBackend() as fake:                  # background thread: sync clients work
        fake.script(Status(503), Reply(text="ok"))   # next two model calls, FIFO; then the echo default
        ...                                          # point the gateway at fake.base_url
        assert fake.requests_to("/v1/chat/completions")[-1].model == "gpt-4o-mini"

    async with AnthropicBackend() as fake:         # or in the test's own event loop
        ...

See ``script.py`` for the behaviours and ``base.py`` for recording and wire options.
"""

from .anthropic_backend import AnthropicBackend
from .base import Call, FakeBackend, Outcome, Output, RecordedRequest, Route, Wire
from .ollama_backend import OllamaBackend
from .openai_backend import OpenAIBackend
from .script import (
    HTML,
    LENGTH,
    STOP,
    TOOL_CALLS,
    Behaviour,
    CutStream,
    Drop,
    EmptyBody,
    Garbage,
    Hang,
    InvalidUTF8,
    NeverEndingStream,
    Reply,
    Slow,
    Status,
    Stream,
    StreamError,
    ToolCall,
    Usage,
    count_tokens,
    echo_text,
    split_words,
)
from .threaded import ServerThread, run_in_thread

__all__ = [
    "HTML",
    "LENGTH",
    "STOP",
    "TOOL_CALLS",
    "AnthropicBackend",
    "Behaviour",
    "Call",
    "CutStream",
    "Drop",
    "EmptyBody",
    "FakeBackend",
    "Garbage",
    "Hang",
    "InvalidUTF8",
    "NeverEndingStream",
    "OllamaBackend",
    "OpenAIBackend",
    "Outcome",
    "Output",
    "RecordedRequest",
    "Reply",
    "Route",
    "ServerThread",
    "Slow",
    "Status",
    "Stream",
    "StreamError",
    "ToolCall",
    "Usage",
    "Wire",
    "count_tokens",
    "echo_text",
    "run_in_thread",
    "split_words",
]
