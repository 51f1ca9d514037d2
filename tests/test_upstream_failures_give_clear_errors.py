"""Dead, slow, failing and garbage-speaking upstreams each give the documented error in the OpenAI
shape, streams never end silently, and the gateway keeps serving afterwards."""

from __future__ import annotations

import json
import time

import httpx
import openai
import pytest

from .conftest import StartGateway
from .fakes.openai_backend import OpenAIBackend
from .fakes.script import (
    HTML,
    CutStream,
    EmptyBody,
    Garbage,
    Hang,
    InvalidUTF8,
    NeverEndingStream,
    Reply,
    Status,
    Stream,
    StreamError,
)
from .gateway import RunningGateway, free_port, openai_backend_config

CHAT = "/v1/chat/completions"
QUESTION = {"model": "hint:fast", "messages": [{"role": "user", "content": "q"}]}


@pytest.fixture
def gw(start_gateway: StartGateway, fake: OpenAIBackend) -> RunningGateway:
    return start_gateway(openai_backend_config(fake.url, extra="timeout_ms = 800"))


def post(gw: RunningGateway, body: dict[str, object] = QUESTION) -> httpx.Response:
    return httpx.post(gw.url + CHAT, json=body, timeout=10)


def assert_error(resp: httpx.Response, status: int, code: str) -> dict[str, object]:
    assert resp.status_code == status, resp.text
    error = resp.json()["error"]
    assert set(error) >= {"message", "type", "code"}
    assert error["code"] == code
    assert "Traceback" not in resp.text
    return error


def assert_still_serving(gw: RunningGateway, fake: OpenAIBackend) -> None:
    fake.script(Reply(text="recovered"))
    resp = post(gw)
    assert resp.status_code == 200
    assert resp.json()["choices"][0]["message"]["content"] == "recovered"


def stream_events(resp: httpx.Response) -> list[str]:
    return [line[6:] for line in resp.text.splitlines() if line.startswith("data: ")]


def test_unreachable_backend_is_a_502_naming_the_backend(start_gateway: StartGateway) -> None:
    gw = start_gateway(openai_backend_config(f"http://127.0.0.1:{free_port()}"))
    error = assert_error(post(gw), 502, "backend_unreachable")
    assert "mock" in str(error["message"])
    stream = post(gw, {**QUESTION, "stream": True})
    assert_error(stream, 502, "backend_unreachable")
    entries = gw.traffic()
    assert [e["status"] for e in entries] == [502, 502]
    assert all(e["error"] for e in entries)


def test_backend_that_hangs_is_a_504_within_its_timeout(gw: RunningGateway, fake: OpenAIBackend) -> None:
    fake.script(Hang(5))
    started = time.monotonic()
    assert_error(post(gw), 504, "backend_timeout")
    assert time.monotonic() - started < 3
    assert_still_serving(gw, fake)


def test_stream_that_hangs_before_headers_is_a_504(gw: RunningGateway, fake: OpenAIBackend) -> None:
    fake.script(Hang(5))
    assert_error(post(gw, {**QUESTION, "stream": True}), 504, "backend_timeout")


@pytest.mark.parametrize(
    ("upstream", "status", "code"),
    [
        (Status(500), 502, "backend_http_500"),
        (Status(503), 503, "backend_http_503"),
        (Status(529), 503, "backend_http_529"),
        (Status(400, message="bad parameter foo"), 400, "backend_http_400"),
        (Status(401), 502, "backend_auth"),
        (Status(404), 502, "backend_not_found"),
    ],
)
def test_upstream_error_statuses_keep_their_meaning(
    gw: RunningGateway, fake: OpenAIBackend, upstream: Status, status: int, code: str
) -> None:
    fake.script(upstream)
    assert_error(post(gw), status, code)
    fake.script(upstream)
    assert_error(post(gw, {**QUESTION, "stream": True}), status, code)
    assert_still_serving(gw, fake)


def test_upstream_400_message_is_passed_on(gw: RunningGateway, fake: OpenAIBackend) -> None:
    fake.script(Status(400, message="temperature must be <= 2"))
    error = assert_error(post(gw), 400, "backend_http_400")
    assert "temperature must be <= 2" in str(error["message"])


def test_upstream_429_keeps_retry_after(gw: RunningGateway, fake: OpenAIBackend) -> None:
    fake.script(Status(429, headers={"Retry-After": "7"}))
    resp = post(gw)
    assert_error(resp, 429, "backend_rate_limited")
    assert resp.headers["retry-after"] == "7"


@pytest.mark.parametrize(
    "upstream", [Garbage(b"not json {"), HTML(status=200), EmptyBody()], ids=["garbage", "html", "empty"]
)
def test_garbage_instead_of_json_is_a_502(gw: RunningGateway, fake: OpenAIBackend, upstream: object) -> None:
    fake.script(upstream)  # type: ignore[arg-type]
    assert_error(post(gw), 502, "backend_bad_response")
    assert_still_serving(gw, fake)


def test_stream_cut_mid_way_ends_with_an_error_event(gw: RunningGateway, fake: OpenAIBackend) -> None:
    fake.script(CutStream(after=3, reply=Reply(text="one two three four five six")))
    resp = post(gw, {**QUESTION, "stream": True})
    assert resp.status_code == 200
    events = stream_events(resp)
    assert "[DONE]" not in events
    assert '"error"' in events[-1] and "backend_bad_response" in events[-1]
    entry = gw.traffic()[0]
    assert entry["error"] and entry["success"] is False
    assert_still_serving(gw, fake)


def test_sdk_raises_on_a_cut_stream_instead_of_returning_a_truncated_answer(
    gw: RunningGateway, fake: OpenAIBackend
) -> None:
    fake.script(CutStream(after=2, reply=Reply(text="one two three four five six")))
    client = openai.OpenAI(base_url=gw.url + "/v1", api_key="x", max_retries=0)
    stream = client.chat.completions.create(
        model="hint:fast", messages=[{"role": "user", "content": "q"}], stream=True
    )
    with pytest.raises(openai.APIError):
        for _ in stream:
            pass


def test_a_stream_cut_inside_an_event_ends_with_the_error_not_a_half_event(
    gw: RunningGateway, fake: OpenAIBackend
) -> None:
    fake.script(CutStream(after=2, reply=Reply(text="one two three four five six"), mid_event=True))
    resp = post(gw, {**QUESTION, "stream": True})
    datas = stream_events(resp)
    chunks = [json.loads(data) for data in datas]  # (a half-sent chunk would not parse)
    assert "backend_bad_response" in chunks[-1]["error"]["code"]
    client = openai.OpenAI(base_url=gw.url + "/v1", api_key="x", max_retries=0)
    fake.script(CutStream(after=2, reply=Reply(text="one two three four five six"), mid_event=True))
    stream = client.chat.completions.create(
        model="hint:fast", messages=[{"role": "user", "content": "q"}], stream=True
    )
    with pytest.raises(openai.APIError, match="backend 'mock'"):  # the gateway's error, not a parse error
        for _ in stream:
            pass


def test_in_stream_upstream_error_is_relayed(gw: RunningGateway, fake: OpenAIBackend) -> None:
    fake.script(StreamError(after=2, message="model overloaded"))
    events = stream_events(post(gw, {**QUESTION, "stream": True}))
    assert any("model overloaded" in e for e in events)


def test_stream_that_stalls_mid_way_ends_with_a_timeout_event(
    gw: RunningGateway, fake: OpenAIBackend
) -> None:
    fake.script(Stream(chunks=["a", "b", "c"], delay=2.0))
    events = stream_events(post(gw, {**QUESTION, "stream": True}))
    assert "backend_timeout" in events[-1]
    assert_still_serving(gw, fake)


def test_invalid_utf8_from_upstream_is_relayed_without_crashing(
    gw: RunningGateway, fake: OpenAIBackend
) -> None:
    fake.script(InvalidUTF8())
    resp = post(gw, {**QUESTION, "stream": True})
    assert resp.status_code == 200
    assert_still_serving(gw, fake)


def test_client_disconnect_mid_stream_cancels_the_upstream_request(
    gw: RunningGateway, fake: OpenAIBackend
) -> None:
    fake.script(NeverEndingStream(interval=0.05))
    with httpx.stream("POST", gw.url + CHAT, json={**QUESTION, "stream": True}, timeout=10) as resp:
        assert resp.status_code == 200
        received = b""
        for chunk in resp.iter_bytes():
            received += chunk
            if received.count(b"data: ") >= 3:
                break
    fake.wait_until(lambda: fake.disconnects == 1, timeout=5)
    entry = gw.traffic()[0]
    assert entry["status"] == 499 and "disconnected" in entry["error"]
    assert_still_serving(gw, fake)


def test_stream_chunks_are_relayed_as_they_arrive(gw: RunningGateway, fake: OpenAIBackend) -> None:
    """The first content chunk reaches the client while the upstream is still waiting to send the next."""
    gap = 0.6
    fake.script(Stream(chunks=["first", "second", "third"], delay=gap))
    started = time.monotonic()
    arrivals: list[tuple[float, bytes]] = []
    with httpx.stream("POST", gw.url + CHAT, json={**QUESTION, "stream": True}, timeout=10) as resp:
        for line in resp.iter_lines():
            if '"first"' in line or '"second"' in line or '"third"' in line:
                arrivals.append((time.monotonic() - started, line.encode()))
    assert len(arrivals) == 3
    first, second, third = (t for t, _ in arrivals)
    # Each chunk arrived before the upstream sent the next one (gap seconds later), not all at the end.
    assert second - first > gap * 0.5
    assert third - second > gap * 0.5
