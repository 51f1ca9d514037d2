"""``python -m bench.routing_sim``: routing quality and cost per strategy, and routing overhead.

Runs every strategy of ``sim.STRATEGIES`` over the labelled prompt set (``bench/data/prompts_routing.jsonl``)
through the real router, prints quality (share of prompts answered by a tier whose answer was good) and
cost relative to always using the large tier, then the routing overhead per request (``overhead.py``)
against the 100 µs budget. Results also go to ``bench/results/routing-latest.json``.

Options: ``--seed N`` (another draw of the answer table), ``--quick`` (fewer overhead iterations),
``--no-overhead``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path
from typing import Any

from bench.routing_sim import overhead, sim

RESULTS = Path(__file__).resolve().parents[1] / "results" / "routing-latest.json"


async def simulate(seed: int) -> tuple[list[sim.Score], int]:
    prompts = sim.load_prompts()
    scores = [await sim.run_strategy(strategy, prompts, seed) for strategy in sim.STRATEGIES]
    scores.append(sim.oracle(prompts, seed))
    return scores, len(prompts)


def quality_table(scores: list[sim.Score], total: int) -> tuple[str, list[dict[str, Any]]]:
    top = scores[0].cost or 1.0
    lines = [
        f"{'strategy':<40} {'quality':>8} {'cost':>7} {'calls/req':>9} {'escalated':>9}  small/medium/large",
        "-" * 100,
    ]
    rows = []
    for score in scores:
        row = {
            "strategy": score.name,
            "quality": round(score.good / total, 4),
            "cost_vs_large": round(score.cost / top, 4),
            "calls_per_request": round(score.calls / total, 3),
            "escalated": round(score.escalated / total, 4),
            "answered_by": dict(zip(sim.LABELS, score.per_tier, strict=True)),
            "errors": score.errors,
        }
        rows.append(row)
        spread = "/".join(str(n) for n in score.per_tier)
        lines.append(
            f"{score.name:<40} {row['quality']:>8.1%} {row['cost_vs_large']:>7.1%} "
            f"{row['calls_per_request']:>9.2f} {row['escalated']:>9.1%}  {spread}"
            + (f"  ({score.errors} errors)" if score.errors else "")
        )
    return "\n".join(lines), rows


def overhead_table(results: dict[str, Any]) -> str:
    budget = results["budget_us"]
    lines = [
        f"{'routing overhead per request (no upstream time)':<52} {'µs':>8}  budget {budget:g} µs",
        "-" * 80,
    ]
    for name, figures in results["cases"].items():
        verdict = "ok" if figures["overhead_us"] <= budget else "OVER"
        lines.append(f"{name:<52} {figures['overhead_us']:>8.1f}  {verdict}")
    for size, micros in results["token_estimate_us"].items():
        lines.append(f"{'token estimate, ' + size + ' conversation':<52} {micros:>8.1f}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.routing_sim", description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--quick", action="store_true", help="fewer overhead iterations")
    parser.add_argument("--no-overhead", action="store_true")
    opts = parser.parse_args(argv)
    scores, total = asyncio.run(simulate(opts.seed))
    text, rows = quality_table(scores, total)
    print(f"routing simulator: {total} labelled prompts, seed {opts.seed}\n")
    print(text)
    report: dict[str, Any] = {"prompts": total, "seed": opts.seed, "strategies": rows}
    if not opts.no_overhead:
        count, rounds = (1000, 3) if opts.quick else (5000, 5)
        results = asyncio.run(overhead.run(count, rounds))
        report["overhead"] = results
        print()
        print(overhead_table(results))
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    over = [
        n
        for n, f in report.get("overhead", {}).get("cases", {}).items()
        if f["overhead_us"] > overhead.BUDGET_US
    ]
    return 1 if over else 0


if __name__ == "__main__":
    sys.exit(main())
