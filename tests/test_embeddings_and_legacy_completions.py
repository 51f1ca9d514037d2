"""``POST /v1/embeddings`` and the legacy ``POST /v1/completions``, routed by tier or alias and passed
through to backends that serve them (OpenAI-compatible ones, and Ollama through its ``/v1`` API);
a tier whose backend cannot serve them is a clear 400, and nothing goes upstream.
"""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import openai
import pytest

from .conftest import StartGateway
from .cross_protocol import ENV, UPSTREAM_MODEL, Fakes, fakes_fixture
from .fakes import Reply, Stream, Usage
from .gateway import RunningGateway

SERVING = ["oa", "ol"]  # an OpenAI-compatible backend, and Ollama's own /v1 endpoints


@pytest.fixture(scope="module")
def fakes() -> Iterator[Fakes]:
    yield from fakes_fixture()


@pytest.fixture
def gw(start_gateway: StartGateway, fakes: Fakes) -> RunningGateway:
    fakes.reset()
    return start_gateway(fakes.config(), env=ENV)


def sdk(gw: RunningGateway) -> openai.OpenAI:
    return openai.OpenAI(base_url=gw.url + "/v1", api_key="unused", max_retries=0)


@pytest.mark.parametrize("tier", SERVING)
def test_embeddings_are_routed_by_tier_and_passed_through(
    gw: RunningGateway, fakes: Fakes, tier: str
) -> None:
    raw = sdk(gw).embeddings.with_raw_response.create(model=tier, input=["kitchen lights", "hall lights on"])
    result = raw.parse()  # the SDK asks for base64 and decodes it: the bytes came through untouched
    assert [item.index for item in result.data] == [0, 1]
    assert all(len(item.embedding) == 8 for item in result.data)
    assert result.data[0].embedding != result.data[1].embedding
    assert raw.headers["x-lmg-tier"] == tier
    sent = fakes.by_tier(tier).last_request
    assert sent.path == "/v1/embeddings"
    assert sent.json == {
        "model": UPSTREAM_MODEL[tier],
        "input": ["kitchen lights", "hall lights on"],
        "encoding_format": "base64",
    }
    entry = gw.traffic()[0]
    assert (entry["endpoint"], entry["status"], entry["tier"]) == ("/v1/embeddings", 200, tier)
    assert entry["prompt_tokens"] == 5


def test_embeddings_by_alias_reach_the_aliased_tier(gw: RunningGateway, fakes: Fakes) -> None:
    vector = (
        sdk(gw).embeddings.create(model="hint:fast", input="x", encoding_format="float").data[0].embedding
    )
    assert len(vector) == 8 and all(isinstance(v, float) for v in vector)
    assert fakes.ollama.last_request.path == "/v1/embeddings"
    assert fakes.ollama.last_request.model == "llama-up"


@pytest.mark.parametrize("tier", ["an", "dm"])
def test_embeddings_on_a_tier_that_cannot_embed_are_a_clear_400(
    gw: RunningGateway, fakes: Fakes, tier: str
) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        sdk(gw).embeddings.create(model=tier, input="x")
    body = caught.value.body
    assert isinstance(body, dict)
    assert body["code"] == "unsupported_by_backend" and "/v1/embeddings" in body["message"]
    assert fakes.anthropic.requests == []
    assert gw.traffic()[0]["status"] == 400


def test_embeddings_for_an_unknown_model_are_a_404(gw: RunningGateway) -> None:
    with pytest.raises(openai.NotFoundError):
        sdk(gw).embeddings.create(model="text-embedding-nope", input="x")


@pytest.mark.parametrize("tier", SERVING)
def test_legacy_completion_is_passed_through(gw: RunningGateway, fakes: Fakes, tier: str) -> None:
    fakes.by_tier(tier).script(Reply(text=" blue.", usage=Usage(5, 1)))
    completion = sdk(gw).completions.create(
        model=tier, prompt="The sky is", max_tokens=5, echo=False, suffix="!", extra_body={"top_k": 3}
    )
    assert completion.choices[0].text == " blue."
    assert completion.usage is not None and completion.usage.completion_tokens == 1
    sent = fakes.by_tier(tier).last_request
    assert sent.path == "/v1/completions"
    assert sent.json == {
        "model": UPSTREAM_MODEL[tier],
        "prompt": "The sky is",
        "max_tokens": 5,
        "echo": False,
        "suffix": "!",
        "top_k": 3,
    }
    entry = gw.traffic()[0]
    assert (entry["endpoint"], entry["prompt_tokens"], entry["completion_tokens"]) == (
        "/v1/completions",
        5,
        1,
    )


@pytest.mark.parametrize("tier", SERVING)
def test_legacy_completion_stream_is_relayed(gw: RunningGateway, fakes: Fakes, tier: str) -> None:
    fakes.by_tier(tier).script(Stream(chunks=[" bl", "ue", " ✓"]))
    stream = sdk(gw).completions.create(model=tier, prompt="The sky is", stream=True)
    assert "".join(chunk.choices[0].text for chunk in stream) == " blue ✓"
    entry = gw.traffic()[0]
    assert entry["stream"] is True and entry["status"] == 200 and entry["error"] is None


def test_legacy_completion_on_an_anthropic_tier_is_a_clear_400(gw: RunningGateway, fakes: Fakes) -> None:
    resp = httpx.post(gw.url + "/v1/completions", json={"model": "an", "prompt": "x", "stream": True})
    assert resp.status_code == 400
    assert resp.json()["error"]["code"] == "unsupported_by_backend"
    assert fakes.anthropic.requests == []
