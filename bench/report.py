"""Turn raw results into derived figures, the issue's target checks and a readable table.

Why "added" figures and ratios instead of absolute latencies: absolute numbers move by up to ~30 %
between runs on this kind of machine (see ``reference/python-stacks.md``); a target minus direct in
the same run, or lm-gateway over the bare proxy in the same run, is what stays comparable.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from bench.scenarios import Scenario

Results = dict[str, Any]
BASE = "direct"  # the baseline of "added" figures
REF = "bare"  # the reference of ratios
MAIN = "gateway"  # what the targets are about


def _get(d: Any, *keys: str) -> Any:
    for k in keys:
        if not isinstance(d, dict) or k not in d:
            return None
        d = d[k]
    return d


def scenario_result(results: Results, target: str, scenario: str) -> dict[str, Any] | None:
    r = _get(results, "targets", target, "scenarios", scenario)
    return r if isinstance(r, dict) and "rps" in r else None


def _diff(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else round(a - b, 4)


@dataclass(frozen=True, slots=True)
class Translation:
    """A translated stream path, next to the passthrough path with the same client API.

    Per-request time is 1 / req/s: at c=16 the target's core is saturated (~100 % CPU), so it is the
    target's CPU time per stream. Divided by the stream's 20 chunks it is a cost per chunk (the
    per-request part, parsing and routing, is spread over the chunks too).
    """

    name: str
    short: str
    translated: str  # its scenario
    passthrough: str  # the same client API, the same upstream API: no translation
    floor: str  # direct-to-mock with the same client API


CHUNKS = 20  # per stream in the stream16* scenarios
TRANSLATIONS: tuple[Translation, ...] = (
    Translation("OpenAI->Anthropic", "O->A", "stream16_o2a", "stream16", "stream16"),
    Translation("Anthropic->OpenAI", "A->O", "stream16_a2o", "stream16_a2a", "stream16_a2a"),
)


def _us_per_chunk(rps: float | None, floor_rps: float | None) -> float | None:
    if not rps or not floor_rps:
        return None
    return round((1.0 / rps - 1.0 / floor_rps) * 1e6 / CHUNKS, 2)


def translation_figures(results: Results, target: str = "gateway") -> dict[str, Any]:
    """Per translation path: req/s, ratio to passthrough, and costs per chunk in µs.

    ``pass_us_per_chunk``: passthrough minus direct; ``added_us_per_chunk``: translated minus direct;
    ``translation_us_per_chunk``: translated minus passthrough (what translating adds);
    ``translation_vs_pass``: the last over the first (issue #3's target: ≤ 2);
    ``added_vs_pass``: translated path's whole added cost over passthrough's.
    """
    out: dict[str, Any] = {}
    for tr in TRANSLATIONS:
        rps = _get(scenario_result(results, target, tr.translated), "rps")
        pass_rps = _get(scenario_result(results, target, tr.passthrough), "rps")
        floor_rps = _get(scenario_result(results, BASE, tr.floor), "rps")
        if not rps or not pass_rps:
            continue
        pass_us = _us_per_chunk(pass_rps, floor_rps)
        added_us = _us_per_chunk(rps, floor_rps)
        own_us = round((1.0 / rps - 1.0 / pass_rps) * 1e6 / CHUNKS, 2)
        out[tr.name] = {
            "translated": tr.translated,
            "passthrough": tr.passthrough,
            "rps": rps,
            "pass_rps": pass_rps,
            "direct_rps": floor_rps,
            "ratio_to_pass": round(rps / pass_rps, 3),
            "pass_us_per_chunk": pass_us,
            "added_us_per_chunk": added_us,
            "translation_us_per_chunk": own_us,
            "translation_vs_pass": round(own_us / pass_us, 2) if pass_us else None,
            "added_vs_pass": round(added_us / pass_us, 2) if pass_us and added_us else None,
        }
    return out


def derive(results: Results, scenarios: Iterable[Scenario]) -> dict[str, Any]:
    """Added latency/TTFC (target minus direct) and req/s ratios (target over bare), per target;
    the translation figures (:func:`translation_figures`) for lm-gateway."""
    out: dict[str, Any] = {}
    for name in results["targets"]:
        if name == BASE:
            continue
        added: dict[str, Any] = {}
        ratio: dict[str, Any] = {}
        for sc in scenarios:
            mine = scenario_result(results, name, sc.name)
            if mine is None:
                continue
            base = scenario_result(results, BASE, sc.name)
            if sc.baseline and base is not None:
                key = "ttfc_ms" if sc.stream else "latency_ms"
                added[sc.name] = {
                    "metric": key,
                    "p50": _diff(_get(mine, key, "p50"), _get(base, key, "p50")),
                    "p99": _diff(_get(mine, key, "p99"), _get(base, key, "p99")),
                }
            ref = scenario_result(results, REF, sc.name)
            if name != REF and "rps" in sc.show and ref is not None and ref["rps"] > 0:
                ratio[sc.name] = round(mine["rps"] / ref["rps"], 3)
        out[name] = {"added_ms": added, "ratio_to_bare": ratio}
    translation = translation_figures(results, MAIN)
    if translation and MAIN in out:
        out[MAIN]["translation"] = translation
    return out


# -- the targets ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Check:
    label: str
    limit: float
    at_least: bool  # True: value >= limit passes; False: value <= limit passes
    unit: str
    digits: int
    stretch: bool
    value: Callable[[Results, str], float | None]

    def verdict(self, value: float | None) -> bool | None:
        if value is None:
            return None
        return value >= self.limit if self.at_least else value <= self.limit

    def threshold(self) -> str:
        return f"{'≥' if self.at_least else '≤'} {_num(self.limit, self.digits)}{self.unit}"


def _rps(sc: str) -> Callable[[Results, str], float | None]:
    return lambda res, t: _get(scenario_result(res, t, sc), "rps")


def _ratio(sc: str) -> Callable[[Results, str], float | None]:
    def value(res: Results, t: str) -> float | None:
        mine, ref = _rps(sc)(res, t), _rps(sc)(res, REF)
        return round(mine / ref, 3) if mine is not None and ref else None

    return value


def _added(sc: str, q: str) -> Callable[[Results, str], float | None]:
    def value(res: Results, t: str) -> float | None:
        base, mine = scenario_result(res, BASE, sc), scenario_result(res, t, sc)
        return _diff(_get(mine, "latency_ms", q), _get(base, "latency_ms", q))

    return value


def _field(key: str) -> Callable[[Results, str], float | None]:
    return lambda res, t: _get(res, "targets", t, key)


def _translation(tr: Translation, key: str) -> Callable[[Results, str], float | None]:
    return lambda res, t: _get(translation_figures(res, t), tr.name, key)


def _slow(*keys: str) -> Callable[[Results, str], float | None]:
    return lambda res, t: _get(scenario_result(res, t, "slow512"), *keys)


def _translation_checks(tr: Translation) -> tuple[Check, Check]:
    """Issues #3 and #8: ≥ 0.7× passthrough's req/s; translating adds ≤ 2× passthrough's cost per chunk."""
    ratio = _translation(tr, "ratio_to_pass")
    cost = _translation(tr, "translation_vs_pass")
    return (
        Check(f"stream {tr.short} req/s vs passthrough", 0.7, True, "×", 2, False, ratio),
        Check(f"translation cost/chunk {tr.short} ÷ pass", 2, False, "×", 1, False, cost),
    )


CHECKS: tuple[Check, ...] = (
    Check("non-stream req/s at c=16", 5000, True, "", 0, False, _rps("c16")),
    Check("non-stream c=16 vs bare proxy", 0.75, True, "×", 2, False, _ratio("c16")),
    Check("stream c=16 vs bare proxy", 0.75, True, "×", 2, False, _ratio("stream16")),
    Check("added p50 at c=1", 0.5, False, " ms", 2, False, _added("c1", "p50")),
    Check("idle RSS", 60, False, " MB", 0, False, _field("idle_rss_mb")),
    Check("start to first served", 1000, False, " ms", 0, False, _field("start_ms")),
    *(check for tr in TRANSLATIONS for check in _translation_checks(tr)),
    Check(
        "512 slow streams: chunk delay p99", 5, False, " ms", 1, False, _slow("added_chunk_delay_ms", "p99")
    ),
    Check("512 slow streams: stalls > 200 ms", 0, False, "", 0, False, _slow("stalls")),
    Check("non-stream c=16 vs bare proxy", 1.5, True, "×", 2, True, _ratio("c16")),
    Check("added p50 at c=1", 0.3, False, " ms", 2, True, _added("c1", "p50")),
    Check("added p99 at c=1", 0.6, False, " ms", 2, True, _added("c1", "p99")),
    Check("idle RSS", 40, False, " MB", 0, True, _field("idle_rss_mb")),
    Check("start to first served", 500, False, " ms", 0, True, _field("start_ms")),
)


def evaluate(results: Results) -> list[dict[str, Any]]:
    out = []
    for c in CHECKS:
        value = c.value(results, MAIN)
        out.append(
            {
                "label": c.label,
                "stretch": c.stretch,
                "threshold": c.threshold(),
                "digits": c.digits,
                "gateway": value,
                "bare": c.value(results, REF),
                "ok": c.verdict(value),
            }
        )
    return out


# -- text ----------------------------------------------------------------------------------------


def _num(v: float | None, digits: int = 0, sign: bool = False) -> str:
    if v is None:
        return "-"
    if digits == 0 and abs(v) >= 1000:
        return f"{v:+,.0f}" if sign else f"{v:,.0f}"
    return f"{v:+.{digits}f}" if sign else f"{v:.{digits}f}"


def _pair(a: float | None, b: float | None, digits: int, sign: bool = False) -> str:
    if a is None and b is None:
        return "-"
    return f"{_num(a, digits, sign)} / {_num(b, digits, sign)}"


def table(results: Results, scenarios: Iterable[Scenario]) -> str:
    """The main table: one row per figure, one column per target."""
    targets = list(results["targets"])
    derived = results.get("derived", {})
    rows: list[tuple[str, list[str]]] = []

    def row(label: str, cell: Callable[[str], str]) -> None:
        rows.append(
            (label, [cell(t) if _get(results, "targets", t, "available") else "n/a" for t in targets])
        )

    for sc in scenarios:
        if any(scenario_result(results, t, sc.name) for t in targets):
            for label, cell in _scenario_rows(results, derived, sc):
                row(label, cell)

    row("idle RSS MB", lambda t: _num(_get(results, "targets", t, "idle_rss_mb"), 1))
    row("loaded RSS MB (peak)", lambda t: _num(_get(results, "targets", t, "loaded_rss_mb"), 1))
    row("start to first served ms", lambda t: _num(_get(results, "targets", t, "start_ms")))
    row("errors (all scenarios)", lambda t: str(_get(results, "targets", t, "errors") or 0))
    row("disturbance (max CPU of others)", lambda t: _disturbance(results, t))

    header = ["", *(_get(results, "targets", t, "title") or t for t in targets)]
    width0 = max(len(header[0]), *(len(label) for label, _ in rows))
    widths = [max(len(header[i + 1]), *(len(cells[i]) for _, cells in rows)) for i in range(len(targets))]
    lines = [
        "  ".join([header[0].ljust(width0), *(h.rjust(w) for h, w in zip(header[1:], widths, strict=True))])
    ]
    lines.append("-" * len(lines[0]))
    for label, cells in rows:
        lines.append(
            "  ".join([label.ljust(width0), *(c.rjust(w) for c, w in zip(cells, widths, strict=True))])
        )
    return "\n".join(lines)


def _scenario_rows(
    results: Results, derived: dict[str, Any], sc: Scenario
) -> list[tuple[str, Callable[[str], str]]]:
    """The table rows one scenario feeds (see ``Scenario.show``)."""

    def res(t: str) -> dict[str, Any] | None:
        return scenario_result(results, t, sc.name)

    def rps(t: str) -> str:
        return _num(_get(res(t), "rps"))

    def latency(t: str) -> str:
        return _pair(_get(res(t), "latency_ms", "p50"), _get(res(t), "latency_ms", "p99"), 3)

    def ttfc(t: str) -> str:
        return _pair(_get(res(t), "ttfc_ms", "p50"), _get(res(t), "ttfc_ms", "p99"), 3)

    def added(t: str) -> str:
        a = _get(derived, t, "added_ms", sc.name)
        return "-" if not a else _pair(a["p50"], a["p99"], 3, sign=True)

    def cpu(t: str) -> str:
        share = _get(res(t), "cpu", "target")
        return "-" if share is None else f"{share:.0%}"

    def chunk_delay(t: str) -> str:
        d = _get(res(t), "added_chunk_delay_ms") or {}
        return (
            "-" if not d else f"{_num(d.get('p50'), 2)} / {_num(d.get('p99'), 2)} / {_num(d.get('max'), 1)}"
        )

    def stalls(t: str) -> str:
        r = res(t)
        return "-" if r is None else f"{r.get('stalls')} / {_num(r.get('max_gap_ms'), 1)}"

    def complete(t: str) -> str:
        r = res(t)
        return "-" if r is None else f"{r.get('requests')}/{r.get('concurrency')}, {r.get('errors')} err"

    rows: list[tuple[str, Callable[[str], str]]] = []
    if "chunks" in sc.show:
        rows.append((f"{sc.title}: added chunk delay p50/p99/max ms", chunk_delay))
        rows.append((f"{sc.title}: stalls > 200 ms / max gap ms", stalls))
        rows.append((f"{sc.title}: complete streams", complete))
        rows.append((f"{sc.title}: TTFC p50 / p99 ms", ttfc))
    if "rps" in sc.show:
        rows.append((f"{sc.title}: req/s", rps))
    if "latency" in sc.show:
        rows.append((f"{sc.title}: p50 / p99 ms", latency))
    if "ttfc" in sc.show:
        rows.append((f"{sc.title}: TTFC p50 / p99 ms", ttfc))
    if sc.baseline:
        rows.append((f"{sc.title}: added {'TTFC' if sc.stream else 'latency'} p50 / p99", added))
    if "rps" in sc.show:
        rows.append((f"{sc.title}: target CPU (core)", cpu))
    return rows


def _disturbance(results: Results, target: str) -> str:
    """The largest share of a core we use that other processes took during any of the target's runs."""
    values = [
        r["disturbance"]
        for r in (_get(results, "targets", target, "scenarios") or {}).values()
        if "disturbance" in r
    ]
    return f"{max(values):.0%}" if values else "-"


def summary(results: Results) -> str:
    """lm-gateway against the bare proxy and against the issue's targets."""
    lines: list[str] = []
    gw = _get(results, "targets", MAIN)
    if gw is None or not gw.get("available"):
        why = "not run (--only)" if gw is None else f"not available: {gw.get('reason')}"
        lines.append(f"lm-gateway: {why}.")
        lines.append("The bare proxy's figures are shown for reference.")
    else:
        ratios = _get(results, "derived", MAIN, "ratio_to_bare") or {}
        if ratios:
            lines.append(
                "lm-gateway / bare proxy req/s: " + ", ".join(f"{k} {v:.2f}×" for k, v in ratios.items())
            )
    translation = _get(results, "derived", MAIN, "translation")
    if translation:
        lines.append("")
        lines.append(translation_table(translation))
    lines.append("")
    lines.append(f"{'target':<40} {'threshold':>11} {'bare':>9} {'lm-gateway':>11}")
    for c in results.get("checks", []):
        mark = {True: "ok", False: "MISSED", None: "-"}[c["ok"]]
        label = ("stretch: " if c["stretch"] else "") + c["label"]
        digits = c["digits"] + (1 if c["digits"] == 2 else 0)  # one more digit than the threshold
        bare, gate = _num(c["bare"], digits), _num(c["gateway"], digits)
        lines.append(f"{label:<40} {c['threshold']:>11} {bare:>9} {gate:>11}  {mark}")
    return "\n".join(lines)


def translation_table(translation: dict[str, Any]) -> str:
    """lm-gateway's translated stream paths next to passthrough (see :func:`translation_figures`)."""
    lines = [
        f"translation, stream c=16, {CHUNKS} chunks; "
        f"µs per chunk = (1/req/s - 1/req/s of the other) / {CHUNKS}",
        f"{'path':<18} {'req/s':>7} {'passthrough':>11} {'ratio':>6} {'pass µs/chunk':>13} "
        f"{'translated':>10} {'translation':>11} {'transl./pass':>12} {'added/pass':>10}",
    ]
    for name, f in translation.items():
        lines.append(
            f"{name:<18} {_num(f['rps']):>7} {_num(f['pass_rps']):>11} {_num(f['ratio_to_pass'], 2):>6} "
            f"{_num(f['pass_us_per_chunk'], 1):>13} {_num(f['added_us_per_chunk'], 1):>10} "
            f"{_num(f['translation_us_per_chunk'], 1, sign=True):>11} "
            f"{_num(f['translation_vs_pass'], 2):>12} {_num(f['added_vs_pass'], 2):>10}"
        )
    return "\n".join(lines)
