"""The routing simulator: the real router (``serve``) over fake tiers whose answers are good or bad per
prompt, as a table decides, with real prices.

The table: every prompt of ``bench/data/prompts_routing.jsonl`` is labelled with the cheapest tier that
answers it well (0 small, 1 medium, 2 large). A tier at or above that label answers well with
probability 0.95, a weaker one with 0.12 (a lucky guess); the draw is a hash of (prompt, tier, seed), so
a run is reproducible and every strategy sees the very same answers. A bad answer takes one of the
shapes real ones take: a hedge or refusal, a too-short reply, a reply cut off by the length limit, or
(most often, and hardest to catch) a confident wrong answer that looks like a good one. Some good
answers to simple prompts are short ("Done.", "Paris."), which naive length checks punish.

Signals the strategies read, each imperfect on purpose:

- token logprobs: the 10th-percentile token probability of good answers is drawn from [0.35, 0.95], of
  confident wrong ones from [0.05, 0.55] (they overlap, as in Gupta et al.);
- the judge grades good answers 8/10 and bad ones 3/10, wrong one time in ten;
- the LLM classifier names the prompt's label four times in five, else a neighbour.

Quality is the share of prompts whose answering tier's answer was good; cost is relative to sending
every prompt to the large tier (classifier and judge calls included).
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from lm_gateway.backends import Backend, ChatStream, Completion, ProbeResult
from lm_gateway.config import BackendConfig, TierConfig, load_config_text
from lm_gateway.router import build_table, serve
from lm_gateway.traffic import TrafficEntry

DATA = Path(__file__).resolve().parents[1] / "data" / "prompts_routing.jsonl"
LABELS = ("small", "medium", "large")
LADDER = [f"sim:{label}" for label in LABELS]


@dataclass(frozen=True, slots=True)
class Prompt:
    id: int
    text: str
    tier: int
    kind: str


def load_prompts(path: Path = DATA) -> list[Prompt]:
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return [Prompt(row["id"], row["prompt"], row["tier"], row["kind"]) for row in rows]


def uniform(*key: object) -> float:
    """A reproducible draw in [0, 1) from ``key``."""
    digest = hashlib.blake2b(repr(key).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


@dataclass(frozen=True, slots=True)
class Outcome:
    good: bool
    shape: str  # good, short-good, hedge, short, truncated, wrong
    p10: float  # 10th-percentile token probability


def outcome(prompt: Prompt, tier: int, seed: int) -> Outcome:
    good = uniform(prompt.id, tier, seed, "good") < (0.95 if tier >= prompt.tier else 0.12)
    draw = uniform(prompt.id, tier, seed, "shape")
    signal = uniform(prompt.id, tier, seed, "p10")
    if good:
        shape = "short-good" if prompt.tier == 0 and draw < 0.35 else "good"
        return Outcome(True, shape, 0.35 + 0.60 * signal)
    if draw < 0.25:
        return Outcome(False, "hedge", 0.20 + 0.50 * signal)
    if draw < 0.35:
        return Outcome(False, "short", 0.30 + 0.60 * signal)
    if draw < 0.45:
        return Outcome(False, "truncated", 0.30 + 0.50 * signal)
    return Outcome(False, "wrong", 0.05 + 0.50 * signal)


TEXTS = {
    "good": "Here is a careful answer that addresses every part of the question, with the reasoning "
    "laid out step by step and a short summary at the end so it is easy to check.",
    "short-good": "Done.",
    "hedge": "I'm not sure about this, but I think it might depend on several factors.",
    "short": "Hmm.",
    "truncated": "Let us go through this carefully. First we need to consider the initial conditions and",
    "wrong": "Here is a confident answer that reads well and has the right shape, walking through the "
    "question step by step, but its key claim is simply wrong.",
}
COMPLETION_TOKENS = {"good": 250, "short-good": 3, "hedge": 40, "short": 2, "truncated": 512, "wrong": 250}


def completion(
    text: str, model: str, prompt_tokens: int, completion_tokens: int, **choice: Any
) -> Completion:
    message = {"role": "assistant", "content": text}
    payload = {
        "id": "chatcmpl-sim",
        "object": "chat.completion",
        "model": model,
        "choices": [{"index": 0, "message": message, "finish_reason": "stop", **choice}],
        "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens},
    }
    return Completion(orjson.dumps(payload), prompt_tokens, completion_tokens)


def logprobs_for(p10: float) -> dict[str, Any]:
    """Twenty tokens whose 10th-percentile probability is ``p10``."""
    values = [math.log(p10)] * 2 + [math.log(0.97)] * 18
    return {"content": [{"token": "t", "logprob": value} for value in values]}


class SimBackend(Backend):
    """Answers as the table says: the answering tiers, the classifier (``sim:router``) and the judge."""

    def __init__(self, prompts: dict[str, Prompt], seed: int) -> None:
        super().__init__(BackendConfig(name="sim", base_url="http://sim.invalid"), None)
        self.prompts = prompts
        self.seed = seed

    def _prompt(self, body: dict[str, Any]) -> Prompt:
        for message in reversed(body["messages"]):
            if message.get("role") == "user":
                return self.prompts[message["content"]]
        raise KeyError("no user message")

    async def chat(self, body: dict[str, Any], tier: TierConfig) -> Completion:
        if tier.name == "sim:router":
            return self._classify(body, tier)
        if tier.name == "sim:judge":
            return self._judge(body, tier)
        prompt = self._prompt(body)
        result = outcome(prompt, LADDER.index(tier.name), self.seed)
        extra: dict[str, Any] = {}
        if result.shape == "truncated":
            extra["finish_reason"] = "length"
        if body.get("logprobs"):
            extra["logprobs"] = logprobs_for(result.p10)
        tokens = 20 + len(prompt.text) // 4
        return completion(TEXTS[result.shape], tier.model, tokens, COMPLETION_TOKENS[result.shape], **extra)

    def _classify(self, body: dict[str, Any], tier: TierConfig) -> Completion:
        text = body["messages"][-1]["content"]
        prompt = self.prompts[text]
        guess = prompt.tier
        if uniform(prompt.id, self.seed, "classifier") >= 0.8:
            guess += 1 if uniform(prompt.id, self.seed, "direction") < 0.5 else -1
        label = LABELS[min(2, max(0, guess))]
        return completion(label, tier.model, 300 + len(text) // 4, 2)

    def _judge(self, body: dict[str, Any], tier: TierConfig) -> Completion:
        graded = body["messages"][1]["content"]
        request = graded.split(">\n", 1)[1].split("\n</request-", 1)[0]
        prompt = self.prompts[request]
        answer = graded.split("<answer-", 1)[1].split(">\n", 1)[1]
        shape = next(shape for shape, text in TEXTS.items() if answer.startswith(text))
        good = shape in ("good", "short-good")
        if uniform(prompt.id, self.seed, shape, "judge") < 0.1:
            good = not good
        return completion(f"SCORE: {8 if good else 3}", tier.model, 200 + len(graded) // 4, 4)

    async def chat_stream(self, body: dict[str, Any], tier: TierConfig) -> ChatStream:
        raise NotImplementedError("the simulator runs non-streamed requests")

    async def probe(self, timeout_s: float) -> ProbeResult:
        return ProbeResult(ok=True)


TIERS = """
[backends.sim]
base_url = "http://sim.invalid"

[[tiers]]
name = "sim:small"
backend = "sim"
model = "small"
input_cost_per_mtok = 0.10
output_cost_per_mtok = 0.40

[[tiers]]
name = "sim:medium"
backend = "sim"
model = "medium"
input_cost_per_mtok = 0.60
output_cost_per_mtok = 2.40

[[tiers]]
name = "sim:large"
backend = "sim"
model = "large"
input_cost_per_mtok = 3.00
output_cost_per_mtok = 15.00

[[tiers]]
name = "sim:router"
backend = "sim"
model = "router"
input_cost_per_mtok = 0.05
output_cost_per_mtok = 0.20

[[tiers]]
name = "sim:judge"
backend = "sim"
model = "judge"
input_cost_per_mtok = 0.60
output_cost_per_mtok = 2.40
"""

PRE_ROUTER = """
[[profiles.default.pre_router]]
route_to = "sim:large"
has_code = true

[[profiles.default.pre_router]]
route_to = "sim:large"
min_chars = 160

[[profiles.default.pre_router]]
route_to = "sim:large"
keywords = ["prove", "derive", "design", "analyse", "analyze", "debug", "essay", "diagnose", "compare"]

[[profiles.default.pre_router]]
route_to = "sim:small"
max_chars = 45
keywords = ["hi", "hello", "thanks", "thank you", "turn on", "turn off", "lock", "unlock", "set", "what is",
            "who", "how many", "convert", "is the", "are any", "good morning", "goodnight", "bye", "play"]
"""


@dataclass(frozen=True, slots=True)
class Strategy:
    name: str
    profile: str  # the [profiles.default] body
    model: str = "default"  # the profile, named as the model
    tail: str = ""


def escalate(checks: list[str]) -> Strategy:
    judge = '\njudge = "sim:judge"\njudge_threshold = 6' if "judge" in checks else ""
    body = (
        'mode = "escalate"\nmax_auto_tier = "sim:large"\n'
        f"[profiles.default.sufficiency]\nchecks = {json.dumps(checks)}{judge}\n"
    )
    return Strategy("escalate: " + " + ".join(checks), body)


CLASSIFY = (
    'mode = "classify"\nclassifier = "sim:router"\nmax_auto_tier = "sim:large"\nclassifier_cache_size = 0\n'
)

STRATEGIES = [
    Strategy("always large (baseline)", 'mode = "dispatch"', model="sim:large"),
    Strategy("always small", 'mode = "dispatch"', model="sim:small"),
    escalate(["heuristics"]),
    escalate(["logprobs"]),
    escalate(["heuristics", "logprobs"]),
    escalate(["judge"]),
    escalate(["heuristics", "judge"]),
    escalate(["heuristics", "logprobs", "judge"]),
    Strategy("classify: LLM classifier", CLASSIFY),
    Strategy("classify: pre-router, then LLM", CLASSIFY, tail=PRE_ROUTER),
    Strategy(
        "classify: pre-router only", 'mode = "classify"\nmax_auto_tier = "sim:large"\n', tail=PRE_ROUTER
    ),
]


CALL_STEPS = ("try", "classifier", "judge", "answer")


@dataclass
class Score:
    name: str
    good: int = 0
    cost: float = 0.0
    calls: int = 0
    escalated: int = 0
    per_tier: list[int] = field(default_factory=lambda: [0, 0, 0])
    errors: int = 0


async def run_strategy(strategy: Strategy, prompts: list[Prompt], seed: int) -> Score:
    config = load_config_text(f"{TIERS}\n[profiles.default]\n{strategy.profile}\n{strategy.tail}")
    table = build_table(config)
    backend = SimBackend({prompt.text: prompt for prompt in prompts}, seed)
    backends: dict[str, Backend] = {"sim": backend}
    score = Score(strategy.name)
    for prompt in prompts:
        body = {"model": strategy.model, "messages": [{"role": "user", "content": prompt.text}]}
        entry = TrafficEntry(str(prompt.id), 0.0, "sim", None, None, "/sim")
        try:
            await serve(table, backends, body, bound_profile=None, expert=False, stream=False, trace=entry)
        except Exception:
            score.errors += 1
            continue
        tier = LADDER.index(entry.tier or "")
        score.per_tier[tier] += 1
        score.good += outcome(prompt, tier, seed).good
        score.cost += entry.cost_usd or 0.0
        score.calls += sum(1 for step in entry.route or () if step.get("step") in CALL_STEPS)
        score.calls += entry.route is None  # a plain dispatch keeps no route: one call
        score.escalated += entry.escalated
    return score


PRICES = ((0.10, 0.40), (0.60, 2.40), (3.00, 15.00))


def call_cost(prompt: Prompt, tier: int, seed: int) -> float:
    """What one answer of ``tier`` to ``prompt`` costs (as ``SimBackend`` reports its usage)."""
    shape = outcome(prompt, tier, seed).shape
    price_in, price_out = PRICES[tier]
    return ((20 + len(prompt.text) // 4) * price_in + COMPLETION_TOKENS[shape] * price_out) / 1e6


def oracle(prompts: list[Prompt], seed: int) -> Score:
    """Always the cheapest tier whose answer is good, known in advance: the best any router can do."""
    score = Score("oracle (hindsight)")
    for prompt in prompts:
        tier = next((t for t in range(3) if outcome(prompt, t, seed).good), 2)
        score.good += outcome(prompt, tier, seed).good
        score.cost += call_cost(prompt, tier, seed)
        score.per_tier[tier] += 1
        score.calls += 1
    return score
