"""Calling one tier: circuit breaker, priority gate, retries with back-off, health, cost.

Every upstream call a mode makes (the answer, a failover, an escalation step, the classifier, the
judge) goes through :func:`complete` or :func:`open_stream`, so each of them is gated, counted in its
backend's health, charged to the request, and — when it fails — written into the route with the
reason and the number of attempts. Callers record successes themselves (they know what the answer
meant: an answer, a label, an insufficient try).

Backend runtime state (circuit and gate) is keyed by the backend adapter object, which a reload
keeps when the backend's settings are unchanged: its health history and its queue survive reloads,
and a changed backend starts afresh.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeAlias

import orjson

from lm_gateway.backends import Backend, BackendError, ChatStream, Completion
from lm_gateway.config.schema import TierConfig
from lm_gateway.http.deadline import deadline
from lm_gateway.protocols import ProtocolError
from lm_gateway.protocols.openai import (
    DONE,
    StreamAccumulator,
    chunks_from_completion,
    encode_chunk,
    parse_stream_event,
)
from lm_gateway.protocols.sse import SSEDecoder
from lm_gateway.router.context import RequestContext
from lm_gateway.router.cost import is_priced
from lm_gateway.router.gate import GateFull, PriorityGate
from lm_gateway.router.health import Circuit, HealthPolicy, is_failure
from lm_gateway.router.tokens import answer_tokens, estimate_request_tokens

if TYPE_CHECKING:
    from lm_gateway.router.dispatch import RouteDecision
    from lm_gateway.router.table import RoutingTable

# How the answering call reaches a backend: ``(backend, decision, internal body, stream)``. The API
# layer may pass its own to forward a same-protocol client's request untouched; ``decision.tier`` is
# the tier being called. Classifier, judge and escalation calls always use :func:`default_call`,
# since the router reads their answers.
Caller: TypeAlias = (
    "Callable[[Backend, RouteDecision, dict[str, Any], bool], Awaitable[Completion | ChatStream]]"
)


async def default_call(
    backend: Backend, decision: RouteDecision, internal: dict[str, Any], stream: bool
) -> Completion | ChatStream:
    """The internal (OpenAI-shaped) call to ``decision.tier``."""
    if stream:
        return await backend.chat_stream(internal, decision.tier)
    return await backend.chat(internal, decision.tier)


perf = time.perf_counter
# Errors that say "not this tier, not now": no retry on the same tier, but failover may move on.
CIRCUIT_OPEN = "backend_circuit_open"
QUEUE_FULL = "backend_queue_full"
_NO_RETRY = frozenset({CIRCUIT_OPEN, QUEUE_FULL})


class BackendRuntime:
    __slots__ = ("circuit", "gate")

    def __init__(self, circuit: Circuit, gate: PriorityGate | None) -> None:
        self.circuit = circuit
        self.gate = gate


_RUNTIMES: weakref.WeakKeyDictionary[Backend, BackendRuntime] = weakref.WeakKeyDictionary()


def runtime_of(backend: Backend) -> BackendRuntime:
    runtime = _RUNTIMES.get(backend)
    if runtime is None:
        limit = backend.config.max_concurrent
        gate = PriorityGate(limit, backend.config.queue_limit) if limit else None
        runtime = _RUNTIMES[backend] = BackendRuntime(Circuit(), gate)
    return runtime


def circuits_of(backends: dict[str, Backend]) -> dict[str, Circuit]:
    """Each backend's circuit breaker, by backend name (for the cluster to share)."""
    return {name: runtime_of(backend).circuit for name, backend in backends.items()}


def is_open(ctx: RequestContext, tier: TierConfig) -> bool:
    """Whether routing should skip ``tier`` because its backend's circuit is open."""
    policy = ctx.table.health
    backend = ctx.backends.get(tier.backend)
    return policy is not None and backend is not None and runtime_of(backend).circuit.is_open(policy)


class _Lease:
    """Permission for one attempt: a gate slot (if gated) and the circuit's admission; ``end`` gives
    both back with the outcome (None: no outcome, the call was abandoned)."""

    __slots__ = ("gated", "open", "policy", "probe", "runtime")

    def __init__(
        self, runtime: BackendRuntime, policy: HealthPolicy | None, gated: bool, probe: bool
    ) -> None:
        self.runtime = runtime
        self.policy = policy
        self.gated = gated
        self.probe = probe
        self.open = True

    def end(self, ok: bool | None) -> None:
        if not self.open:
            return
        self.open = False
        if self.gated:
            gate = self.runtime.gate
            assert gate is not None
            gate.release()
        if self.policy is not None:
            if ok is not None:
                self.runtime.circuit.record(ok, self.policy, self.probe)
            elif self.probe:
                self.runtime.circuit.abandon()


def _admit(backend: Backend, runtime: BackendRuntime, policy: HealthPolicy | None) -> _Lease:
    """The circuit's permission for one attempt (no gate slot yet)."""
    admitted = runtime.circuit.admit(policy) if policy is not None else "closed"
    if admitted is None:
        assert policy is not None
        wait = math.ceil(runtime.circuit.retry_in(policy)) or 1
        raise BackendError(
            503,
            f"backend '{backend.name}' is failing; its circuit is open for another {wait}s",
            code=CIRCUIT_OPEN,
            retryable=True,
            retry_after=str(wait),
        )
    return _Lease(runtime, policy, False, admitted == "probe")


async def _queue(ctx: RequestContext, backend: Backend, gate: PriorityGate, lease: _Lease) -> None:
    """Wait for a slot of the backend's gate; the lease then holds it."""
    waited = perf()
    try:
        await gate.acquire(ctx.priority)
    except GateFull:
        lease.end(None)
        raise BackendError(
            429,
            f"backend '{backend.name}' has {gate.queued} requests waiting already; try again shortly",
            code=QUEUE_FULL,
            type_="rate_limit_error",
            retryable=True,
            retry_after="1",
        ) from None
    except BaseException:
        lease.end(None)
        raise
    finally:
        waited = perf() - waited
        ctx.upstream_s += waited
        if waited > 0.001:  # latency the traffic entry should explain (lm-gateway-rs hid it)
            extra = ctx.trace.extra
            extra["gate_wait_ms"] = round(extra.get("gate_wait_ms", 0.0) + waited * 1000, 3)
    lease.gated = True


def _backend(ctx: RequestContext, tier: TierConfig) -> Backend:
    backend = ctx.backends.get(tier.backend)
    if backend is None:
        raise BackendError(
            502,
            f"tier '{tier.name}' uses backend '{tier.backend}', which is not running",
            code="backend_missing",
        )
    return backend


async def _attempts(
    ctx: RequestContext,
    tier: TierConfig,
    body: dict[str, Any],
    *,
    stream: bool,
    role: str,
    retry: bool,
    via: tuple[Caller, RouteDecision] | None,
) -> tuple[Completion | ChatStream, _Lease, float]:
    """Call until success or the last allowed attempt; returns the result, its lease (still open)
    and the call's duration in ms. On failure the route gets the error step and it is raised."""
    backend = _backend(ctx, tier)
    runtime = runtime_of(backend)
    attempt = 0
    retried: BackendError | None = None
    while True:
        attempt += 1
        try:
            lease = _admit(backend, runtime, ctx.table.health)
            if runtime.gate is not None:
                await _queue(ctx, backend, runtime.gate, lease)
        except BackendError as err:
            _note_failure(ctx, tier, role, err, attempt - 1)
            raise
        started = perf()
        try:
            result: Completion | ChatStream
            if via is not None:
                result = await via[0](backend, via[1], body, stream)
            elif stream:
                result = await backend.chat_stream(body, tier)
            else:
                result = await backend.chat(body, tier)
        except BackendError as err:
            ctx.upstream_s += perf() - started
            lease.end(not is_failure(err.status, err.code))
            wait = None
            if retry and err.retryable and err.code not in _NO_RETRY:
                wait = ctx.table.retry.wait_before(attempt, err.retry_after, ctx.remaining_s())
            if wait is None:
                _note_failure(ctx, tier, role, err, attempt)
                raise
            await asyncio.sleep(wait)
            ctx.upstream_s += wait
            retried = err
            continue
        except BaseException:
            ctx.upstream_s += perf() - started
            lease.end(None)
            raise
        elapsed = perf() - started
        ctx.upstream_s += elapsed
        if retried is not None:  # the route shows the retries that led to this answer
            step = {"step": "retry", "tier": tier.name, "outcome": f"ok after {attempt} attempts"}
            ctx.note(step | {"reason": retried.code})
        return result, lease, elapsed * 1000


def _note_failure(ctx: RequestContext, tier: TierConfig, role: str, err: BackendError, attempts: int) -> None:
    skipped = err.code in _NO_RETRY and attempts == 0
    step: dict[str, Any] = {"step": role, "tier": tier.name, "outcome": "skipped" if skipped else "error"}
    step["reason"] = "circuit open" if err.code == CIRCUIT_OPEN else err.code
    step["status"] = err.status
    if attempts > 1:
        step["attempts"] = attempts
    ctx.note(step)


@dataclass(slots=True)
class Called:
    """A whole answer from one tier, with what it took."""

    tier: TierConfig
    completion: Completion
    ms: float
    cost: float | None


async def complete(
    ctx: RequestContext,
    tier: TierConfig,
    body: dict[str, Any],
    *,
    role: str = "answer",
    retry: bool = True,
    via: tuple[Caller, RouteDecision] | None = None,
) -> Called:
    """A whole answer from ``tier`` (see the module doc); raises :class:`BackendError`."""
    result, lease, ms = await _attempts(ctx, tier, body, stream=False, role=role, retry=retry, via=via)
    lease.end(True)
    assert isinstance(result, Completion)
    cost = None
    if is_priced(tier):
        prompt = result.prompt_tokens
        completion = result.completion_tokens
        if completion is None:
            completion = answer_tokens(content_of(result.body))
        cost = ctx.charge(tier, prompt if prompt is not None else estimate_request_tokens(body), completion)
    return Called(tier, result, ms, cost)


async def ask(
    ctx: RequestContext,
    tier: TierConfig,
    messages: list[dict[str, Any]],
    *,
    role: str,
    max_tokens: int,
    think: bool,
    timeout_s: float,
) -> Called | None:
    """One auxiliary call (classifier, judge): deterministic, no retries (a slow or failing helper
    must not hold the request up), bounded by its own timeout. None when it fails; the route notes
    why."""
    payload: dict[str, Any] = {
        "model": tier.model,
        "messages": messages,
        "stream": False,
        "temperature": 0,
        "max_tokens": max_tokens,
    }
    if ctx.table.understands_think(tier):
        payload["think"] = think
    try:
        with deadline(timeout_s):
            return await complete(ctx, tier, payload, role=role, retry=False)
    except TimeoutError:
        ctx.note({"step": role, "tier": tier.name, "outcome": "error", "reason": "timeout"})
        return None
    except BackendError:
        return None  # the route already has the error


def content_of(raw: bytes) -> str:
    """The text of a whole completion's first choice (empty when there is none)."""
    try:
        payload = orjson.loads(raw)
        content = payload["choices"][0]["message"]["content"]
    except (orjson.JSONDecodeError, KeyError, IndexError, TypeError):
        return ""
    return content if isinstance(content, str) else ""


async def open_stream(
    ctx: RequestContext,
    tier: TierConfig,
    body: dict[str, Any],
    *,
    role: str = "answer",
    prefix: bytes | None = None,
    step: dict[str, Any] | None = None,
    via: tuple[Caller, RouteDecision] | None = None,
) -> ChatStream:
    """A live stream from ``tier``. Its gate slot is held, and its cost and health outcome are
    recorded, when it ends (also written into ``step``); an unpriced, ungated stream without a
    prefix is returned as the backend gave it, with no extra layer per chunk."""
    result, lease, _ms = await _attempts(ctx, tier, body, stream=True, role=role, retry=True, via=via)
    assert isinstance(result, ChatStream)
    priced = is_priced(tier)
    if not (lease.gated or priced or prefix):
        lease.end(True)
        return result

    def finished(stream: TrackedStream) -> None:
        if not priced:
            return
        prompt = stream.prompt_tokens
        completion = stream.completion_tokens if stream.completion_tokens is not None else stream.events
        cost = ctx.charge(tier, prompt if prompt is not None else estimate_request_tokens(body), completion)
        if step is not None and cost is not None:
            step["cost_usd"] = cost

    return TrackedStream(result, lease, finished, prefix, count_events=priced)


class TrackedStream(ChatStream):
    """Relays a backend stream and reports its end exactly once, however it ends: drained, closed by
    the client, or never iterated at all (then when it is collected), so a gate slot is never
    leaked. ``events`` counts the SSE events relayed (about one token each) when asked to."""

    def __init__(
        self,
        inner: ChatStream,
        lease: _Lease,
        on_end: Callable[[TrackedStream], None],
        prefix: bytes | None = None,
        *,
        count_events: bool = False,
    ) -> None:
        self._inner = inner
        self._lease: _Lease | None = lease
        self._on_end = on_end
        self._prefix = prefix
        self._count = count_events
        self.events = 0

    @property  # (a plain attribute on other streams)
    def upstream_done(self) -> bool:  # type: ignore[override]
        """The relayed stream's: a consumer re-encoding this stream writes its end at once too."""
        return self._inner.upstream_done

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._relay()

    async def _relay(self) -> AsyncIterator[bytes]:
        chunks = aiter(self._inner)
        try:
            if self._prefix:
                yield self._prefix
            async for chunk in chunks:
                if self._count:
                    self.events += chunk.count(b"data:")
                yield chunk
        finally:
            try:
                closer = getattr(chunks, "aclose", None)
                if closer is not None:
                    await closer()
            finally:
                self._finish()

    def _finish(self) -> None:
        lease, self._lease = self._lease, None
        if lease is None:
            return
        inner = self._inner
        self.prompt_tokens, self.completion_tokens = inner.prompt_tokens, inner.completion_tokens
        self.error = inner.error
        lease.end(inner.error is None)
        self._on_end(self)

    def __del__(self) -> None:
        with contextlib.suppress(Exception):  # a finaliser must never raise
            self._finish()


class ReplayStream(ChatStream):
    """A whole answer sent as a stream (escalate mode streams the buffered answer that passed)."""

    def __init__(self, payload: dict[str, Any], include_usage: bool, prefix: bytes | None = None) -> None:
        self._payload = payload
        self._include_usage = include_usage
        self._prefix = prefix
        usage = payload.get("usage")
        if isinstance(usage, dict):
            prompt, completion = usage.get("prompt_tokens"), usage.get("completion_tokens")
            self.prompt_tokens = prompt if isinstance(prompt, int) else None
            self.completion_tokens = completion if isinstance(completion, int) else None

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._events()

    async def _events(self) -> AsyncIterator[bytes]:
        if self._prefix:
            yield self._prefix
        for chunk in chunks_from_completion(self._payload, self._include_usage):
            yield encode_chunk(chunk)
        yield DONE


async def collect(stream: ChatStream, tier: TierConfig) -> dict[str, Any]:
    """Drain a stream into the whole completion it amounts to (with the token logprobs, if any)."""
    decoder = SSEDecoder()
    whole = StreamAccumulator()
    logprobs: list[Any] = []
    chunks = aiter(stream)
    try:
        async for chunk in chunks:
            for event in decoder.feed(chunk):
                _absorb(parse_stream_event(event), whole, logprobs)
        for event in decoder.flush():
            _absorb(parse_stream_event(event), whole, logprobs)
    except ProtocolError as exc:
        raise BackendError(
            502, f"tier '{tier.name}' broke its stream: {exc}", code="backend_stream_error", retryable=True
        ) from exc
    finally:
        closer = getattr(chunks, "aclose", None)
        if closer is not None:
            await closer()  # ends the upstream request (and frees its gate slot) at once
    if stream.error:
        raise BackendError(502, stream.error, code="backend_stream_error", retryable=True)
    payload = whole.result()
    if logprobs and payload["choices"]:
        payload["choices"][0]["logprobs"] = {"content": logprobs}
    return payload


def _absorb(chunk: dict[str, Any] | None, whole: StreamAccumulator, logprobs: list[Any]) -> None:
    if chunk is None:
        return
    whole.add(chunk)
    for choice in chunk.get("choices") or ():
        block = choice.get("logprobs") if isinstance(choice, dict) else None
        if isinstance(block, dict) and isinstance(block.get("content"), list):
            logprobs.extend(block["content"])


def backend_status(table: RoutingTable, backends: dict[str, Backend]) -> dict[str, dict[str, Any]]:
    """Circuit and gate state per backend, for the admin API (``GET /admin/backends/health`` can
    merge it in): ``{name: {"circuit": {...}, "gate": {...} | None}}``."""
    policy = table.health
    status: dict[str, dict[str, Any]] = {}
    for name, backend in backends.items():
        runtime = runtime_of(backend)
        circuit = runtime.circuit.snapshot(policy) if policy is not None else None
        gate = runtime.gate.snapshot() if runtime.gate is not None else None
        status[name] = {"circuit": circuit, "gate": gate}
    return status
