"""Cheap token estimates, for context-window gating and cost ceilings.

lm-gateway-rs encodes every request with tiktoken's ``o200k_base`` and rebuilds the encoder each time
(~130 ms per request). Routing only needs to know whether a request *fits* a window or a budget, so
an estimate is enough, provided it errs high and costs microseconds: characters divided by a fixed
ratio, per message, with no tokenizer and no allocation beyond a few integers.

Calibration: English prose and code average close to 4 characters per token in the GPT-4o and
Llama-3 vocabularies, and very few texts beat that ratio, so ``len / 4`` rarely under-counts ASCII.
Other scripts pack fewer characters per token (CJK is about one token per character), so every
non-ASCII character counts as :data:`NON_ASCII_TOKENS` tokens. The fixed per-message cost and the final
10 % margin follow lm-gateway-rs, so a config tuned there keeps gating at the same sizes.
``bench/routing_sim`` measures the cost of an estimate.
"""

from __future__ import annotations

import math
from typing import Any

import orjson

ASCII_CHARS_PER_TOKEN = 4.0
NON_ASCII_TOKENS = 1.0  # per character
MESSAGE_TOKENS = 4  # role markers and separators, per message
REPLY_PRIMER_TOKENS = 2  # once per request, as counted by lm-gateway-rs
IMAGE_TOKENS = 768  # an image part at high detail in the OpenAI accounting; errs high for small ones
MARGIN = 1.1


def text_tokens(text: str) -> float:
    """Estimated tokens of ``text`` (a float: rounding happens once, on the total)."""
    if text.isascii():
        return len(text) / ASCII_CHARS_PER_TOKEN
    ascii_chars = len(text.encode("ascii", "ignore"))
    return ascii_chars / ASCII_CHARS_PER_TOKEN + (len(text) - ascii_chars) * NON_ASCII_TOKENS


def _content_tokens(content: Any) -> float:
    if isinstance(content, str):
        return text_tokens(content)
    total = 0.0
    if isinstance(content, list):
        for part in content:
            if not isinstance(part, dict):
                continue
            text = part.get("text")
            if isinstance(text, str):
                total += text_tokens(text)
            elif part.get("type") in ("image_url", "image", "input_image"):
                total += IMAGE_TOKENS
    return total


def estimate_request_tokens(body: dict[str, Any]) -> int:
    """Estimated prompt tokens of an OpenAI-shaped request: messages, tool calls and tool schemas.

    An empty body is 0; otherwise the result is rounded up after a 10 % safety margin. Plain ASCII
    string content (the common case) takes the inlined fast branch.
    """
    total = 0.0
    messages = body.get("messages")
    if isinstance(messages, list):
        total += REPLY_PRIMER_TOKENS + (MESSAGE_TOKENS + 1) * len(messages)  # the role is one token
        for message in messages:
            if not isinstance(message, dict):
                continue
            content = message.get("content")
            if isinstance(content, str) and content.isascii():
                total += len(content) / ASCII_CHARS_PER_TOKEN
            else:
                total += _content_tokens(content)
            if message.get("tool_calls"):
                total += len(orjson.dumps(message["tool_calls"])) / ASCII_CHARS_PER_TOKEN
    tools = body.get("tools")
    if tools:
        total += len(orjson.dumps(tools)) / ASCII_CHARS_PER_TOKEN
    return math.ceil(total * MARGIN) if total else 0


def answer_tokens(text: str) -> int:
    """Estimated tokens of an answer whose usage the backend did not report (for cost only)."""
    return math.ceil(text_tokens(text)) if text else 0
