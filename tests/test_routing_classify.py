"""Classify mode through the real router: the classifier's answer (or failure) → the tier, rules and
cascades, prompts, the pre-router, the per-conversation cache, budgets and ``POST /admin/route``'s
decision function. The classifier and the answering tiers share one scripted backend: the classifier
call is the one whose first message is the classifier prompt.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from lm_gateway.config.schema import RuleConfig
from lm_gateway.router import build_table, explain

from .test_routing_kit import GOOD, LADDER, Rig, Say, profile

BASE = 'classifier = "local:instant"\nmax_auto_tier = "cloud:deep"\n'


def classify(extra: str = "", tail: str = "") -> str:
    return LADDER + profile("classify", BASE + extra) + tail


def label(text: str, **kwargs: Any) -> Say:
    return Say(text=text, **kwargs)


def is_classifier_call(body: dict[str, Any]) -> bool:
    return str(body["messages"][0]["content"]).startswith("You decide")


def classifier_says(rig: Rig, text: str) -> None:
    """Every classifier call answers ``text``; every other call the default answer."""
    rig.mock.by = lambda model, body: label(text) if is_classifier_call(body) else Say()


def classifier_calls(rig: Rig) -> list[dict[str, Any]]:
    return [body for _, body in rig.mock.calls if is_classifier_call(body)]


def answer_calls(rig: Rig) -> list[tuple[str, dict[str, Any]]]:
    return [(model, body) for model, body in rig.mock.calls if body not in classifier_calls(rig)]


@pytest.mark.parametrize(
    ("classifier_says", "extra", "tier", "route_bit"),
    [
        (label("deep"), "", "cloud:deep", "label cloud:deep=deep (suffix)"),
        (label("local:fast"), "", "local:fast", "(exact)"),
        (label("Expert."), "", "cloud:deep", "above the ceiling, clamped"),  # never the middle
        (label("banana"), "", "local:fast", "unknown label, middle tier"),
        (
            label("<think>long musing about tiers</think>\ninstant"),
            "",
            "local:instant",
            "classifier local:instant=instant",
        ),
        (label(""), "", "local:fast", "classifier failed: middle tier"),
        (
            label(""),
            'classifier_fallback = "cloud:deep"',
            "cloud:deep",
            "classifier failed: classifier_fallback",
        ),
        (
            Say(status=503),
            'classifier_fallback = "cloud:deep"',
            "cloud:deep",
            "classifier local:instant=error",
        ),
        (Say(delay=2, text="deep"), "classifier_timeout_ms = 100", "local:fast", "(timeout)"),
    ],
)
async def test_classifier_answer_to_tier(classifier_says: Say, extra: str, tier: str, route_bit: str) -> None:
    rig = Rig(classify(extra))
    rig.mock.queue("instant-model", classifier_says)
    result = await rig.ask("Explain monads")
    assert result.error is None, result.error
    assert result.tier == tier
    assert route_bit in (result.header or ""), result.header
    assert result.text == GOOD


async def test_the_classifier_call_uses_our_prompt_with_the_profiles_labels() -> None:
    rig = Rig(classify())
    rig.mock.queue("instant-model", label("fast"))
    await rig.ask("What is 2+2?")
    [call] = classifier_calls(rig)
    prompt = call["messages"][0]["content"]
    assert "- instant:" in prompt and "- fast:" in prompt and "- deep:" in prompt and "expert" not in prompt
    assert call["messages"][1] == {"role": "user", "content": "What is 2+2?"}
    assert call["temperature"] == 0 and call["max_tokens"] > 0 and call["stream"] is False
    assert "think" not in call  # an OpenAI-protocol backend would reject it (10.1 #12)


async def test_think_label_and_classifier_think_reach_ollama_backends_only() -> None:
    toml = classify().replace(
        'base_url = "http://mock.invalid"', 'base_url = "http://mock.invalid"\nprovider = "ollama"'
    )
    rig = Rig(toml)
    rig.mock.queue("instant-model", label("deep-think"))
    result = await rig.ask()
    assert result.tier == "cloud:deep"
    [call] = classifier_calls(rig)
    assert call["think"] is False
    [(_, final)] = answer_calls(rig)
    assert final["think"] is True


RULES = """
[[profiles.default.rules]]
when = { Domain = "CODE" }
route_to = "hint:expert"
priority = 5

[[profiles.default.rules]]
when = { class = "greeting" }
route_to = "local:instant"
priority = 1
"""


@pytest.mark.parametrize(
    ("classifier_says", "extra", "expert", "tier"),
    [
        ("fast domain=code", "", False, "cloud:expert"),  # keys match case-insensitively (10.1 #12)
        ("fast domain=code", "expert_requires_flag = true", False, "cloud:deep"),  # clamped, not 403
        ("fast domain=code", "expert_requires_flag = true", True, "cloud:expert"),
        ("greeting", "", False, "local:instant"),  # a bare word is also the class
        ("deep domain=cooking", "", False, "cloud:deep"),  # no rule: the label
    ],
)
async def test_rules(classifier_says: str, extra: str, expert: bool, tier: str) -> None:
    rig = Rig(classify(extra, RULES))
    rig.mock.queue("instant-model", label(classifier_says))
    result = await rig.ask(expert=expert)
    assert result.tier == tier, result.header


CASCADE = """
[[profiles.default.rules]]
when = { domain = "code" }
route_to = "coding"

[profiles.coding]
mode = "classify"
classifier = "local:fast"
max_auto_tier = "cloud:expert"
system_prompt = "You write code."

[profiles.coding.class_prompts]
expert = "Show your work."
"""


async def test_a_cascade_runs_the_target_profiles_classifier_and_prompts() -> None:
    rig = Rig(classify(tail=CASCADE))
    rig.mock.queue("instant-model", label("fast domain=code"))
    rig.mock.queue("fast-model", label("expert"))  # the coding profile's classifier
    result = await rig.ask("write a parser")
    assert result.tier == "cloud:expert"
    assert [step["step"] for step in result.steps()] == [
        "classifier",
        "rule",
        "classifier",
        "label",
        "answer",
    ]
    model, final = rig.mock.calls[-1]
    assert model == "expert-model"
    # The cascaded profile's prompt applies (lm-gateway-rs dropped it), after its class prompt.
    assert final["messages"][0] == {"role": "system", "content": "Show your work.\n\nYou write code."}
    assert result.entry.class_label == "expert"


@pytest.mark.parametrize(
    ("target", "tier", "text"),
    [
        ('[profiles.coding]\nmode = "dispatch"\nclassifier = "cloud:deep"\n', "cloud:deep", GOOD),
        ('[profiles.coding]\nmode = "reply"\nreply_message = "No code here."\n', "reply", "No code here."),
        ('[profiles.coding]\nmode = "escalate"\nmax_auto_tier = "local:fast"\n', "local:instant", GOOD),
    ],
)
async def test_a_cascade_honours_the_target_profiles_mode(target: str, tier: str, text: str) -> None:
    # lm-gateway-rs ignored the target's mode and failed on reply targets (10.1 #12).
    tail = '[[profiles.default.rules]]\nwhen = { domain = "code" }\nroute_to = "coding"\n' + target
    rig = Rig(classify(tail=tail))
    rig.mock.queue("instant-model", label("x domain=code"))
    result = await rig.ask()
    assert (result.tier, result.text.strip()) == (tier, text)


async def test_a_cycle_that_slips_past_validation_is_cut_at_run_time() -> None:
    rig = Rig(classify(tail='[profiles.other]\nmode = "classify"\nclassifier = "local:instant"\n'))
    profiles = dict(rig.config.profiles)
    loop = (RuleConfig(route_to="other", when={"domain": "x"}),)
    back = (RuleConfig(route_to="default", when={"domain": "x"}),)
    profiles["default"] = dataclasses.replace(profiles["default"], rules=loop)
    profiles["other"] = dataclasses.replace(profiles["other"], rules=back)
    rig.table = build_table(dataclasses.replace(rig.config, profiles=profiles))
    rig.mock.default = label("fast domain=x")
    result = await rig.ask()
    assert result.error is None and result.tier == "local:fast"
    assert {
        "step": "rule",
        "tier": "default",
        "outcome": "skipped",
        "reason": "cascade cycle",
    } in result.steps()


async def test_class_prompt_and_tool_result_bump() -> None:
    rig = Rig(
        classify('system_prompt = "Be brief."', '[profiles.default.class_prompts]\ninstant = "One line."\n')
    )
    classifier_says(rig, "instant")
    result = await rig.ask()
    assert result.tier == "local:instant"
    assert rig.mock.calls[-1][1]["messages"][0]["content"] == "One line.\n\nBe brief."
    messages = [
        {"role": "user", "content": "lights?"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [{"id": "1", "type": "function", "function": {"name": "f", "arguments": "{}"}}],
        },
        {"role": "tool", "tool_call_id": "1", "content": "on"},
        {"role": "user", "content": "and now?"},
    ]
    bumped = await rig.ask(messages=messages)
    assert bumped.tier == "local:fast" and bumped.steps("tools")


async def test_labels_are_cached_per_conversation() -> None:
    rig = Rig(classify())
    classifier_says(rig, "deep")
    turn1 = [{"role": "user", "content": "plan my trip"}]
    first = await rig.ask(messages=turn1)
    again = await rig.ask(messages=turn1)  # identical request
    turn2 = [*turn1, {"role": "assistant", "content": "Sure"}, {"role": "user", "content": "now in winter"}]
    follow_up = await rig.ask(messages=turn2)
    assert len(classifier_calls(rig)) == 1
    assert first.tier == again.tier == follow_up.tier == "cloud:deep"
    assert follow_up.steps("classifier")[0]["reason"] == "cached"
    every_turn = Rig(classify("classifier_every_turn = true"))
    every_turn.mock.by = rig.mock.by
    await every_turn.ask(messages=turn1)
    await every_turn.ask(messages=turn2)
    await every_turn.ask(messages=turn2)
    assert len(classifier_calls(every_turn)) == 2
    no_cache = Rig(classify("classifier_cache_size = 0"))
    no_cache.mock.by = rig.mock.by
    await no_cache.ask(messages=turn1)
    await no_cache.ask(messages=turn1)
    assert len(classifier_calls(no_cache)) == 2


PRE = """
[[profiles.default.pre_router]]
route_to = "local:instant"
max_chars = 20
keywords = ["hi", "thanks"]

[[profiles.default.pre_router]]
route_to = "hint:expert"
has_code = true
"""


@pytest.mark.parametrize(
    ("text", "extra", "expert", "tier", "classifier_called"),
    [
        ("hi there", "", False, "local:instant", False),
        ("```py\nprint(1)\n```", "", False, "cloud:expert", False),  # operator target above the ceiling
        ("```py\nprint(1)\n```", "expert_requires_flag = true", False, "cloud:deep", False),  # ...clamped
        ("Explain the French revolution", "", False, "cloud:deep", True),
    ],
)
async def test_pre_router_runs_before_the_classifier(
    text: str, extra: str, expert: bool, tier: str, classifier_called: bool
) -> None:
    rig = Rig(classify(extra, PRE))
    rig.mock.queue("instant-model", label("deep"))
    result = await rig.ask(text, expert=expert)
    assert result.tier == tier
    assert bool(classifier_calls(rig)) is classifier_called


async def test_pre_router_alone_needs_no_classifier() -> None:
    toml = LADDER + profile("classify", 'classifier_fallback = "local:fast"\n') + PRE
    rig = Rig(toml)
    assert (await rig.ask("thanks")).tier == "local:instant"
    other = await rig.ask("what is the meaning of life?")
    assert other.tier == "local:fast" and "no pre-router rule matched" in (other.header or "")


async def test_classifier_context_zero_skips_the_classifier() -> None:
    rig = Rig(classify("classifier_context = 0"))
    result = await rig.ask()
    assert result.tier == "local:instant" and classifier_calls(rig) == []


CLIENT = '[[clients]]\nname = "ha"\nkey_env = "KEY"\nprofile = "default"\nmax_escalations_per_minute = 1\n'


async def test_the_clients_escalation_budget_caps_label_moves() -> None:
    rig = Rig(classify(tail=CLIENT))
    classifier_says(rig, "deep")
    first = await rig.ask(client="ha")
    second = await rig.ask(client="ha")
    anonymous = await rig.ask()
    assert (first.tier, second.tier, anonymous.tier) == ("cloud:deep", "local:instant", "cloud:deep")
    assert "escalation budget spent" in (second.header or "")


async def test_context_window_and_cost_ceiling_apply_after_the_label() -> None:
    toml = LADDER.replace('model = "instant-model"', 'model = "instant-model"\nmax_context_tokens = 5')
    toml = toml.replace('model = "deep-model"', 'model = "deep-model"\ninput_cost_per_mtok = 100000.0')
    rig = Rig(toml + profile("classify", BASE + "cost_ceiling = 1.0"))
    rig.mock.queue("instant-model", label("instant"))
    assert (await rig.ask("a fairly long question " * 3)).tier == "local:fast"  # context bump
    rig.mock.queue("instant-model", label("deep"))
    capped = await rig.ask("x" * 200)  # ~55 tokens at 0.1 USD each on cloud:deep
    assert capped.tier == "local:fast" and capped.steps("cost")


async def test_explain_calls_the_classifier_but_not_the_answering_tier() -> None:
    rig = Rig(classify(tail=CASCADE))
    rig.mock.queue("instant-model", label("fast domain=code"))
    rig.mock.queue("fast-model", label("deep"))
    body = rig.body("write a parser")
    decision = await explain(rig.table, dict(rig.backends), body)
    assert decision["tier"] == "cloud:deep" and decision["final_profile"] == "coding"
    assert decision["model"] == "deep-model" and decision["backend"] == "mock"
    assert [step["step"] for step in decision["route"]] == ["classifier", "rule", "classifier", "label"]
    assert decision["header"].startswith("classify label=deep; classifier local:instant=fast")
    assert decision["system_prompt"] == "You write code."
    assert rig.mock.models() == ["instant-model", "fast-model"]  # classifiers only
