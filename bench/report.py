"""Prints every figure in BENCH_OUT as one table, beside the speed the project aims for."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from common import OUT

# key, what it is, the goal (a figure at least this high, or at most for latencies)
ROWS: list[tuple[str, str, str]] = [
    ("baseline_json_rps", "bare Django JSON view, requests/s", ""),
    ("consent_check_rps", "consent check (1 subject), requests/s", ""),
    ("consent_check_p99_ms", "consent check p99, ms", "<= 50"),
    ("consent_check_ratio", "consent check / baseline", ">= 0.5"),
    ("bulk_check_subjects_per_s", "bulk check (1,000 a request), subjects/s", ">= 200000"),
    ("rollout_subjects_per_s", "rollout engine, subjects/s", ">= 50000"),
    ("rollout_raw_sql_subjects_per_s", "hand-written SQL floor, subjects/s", ""),
    ("rollout_ratio", "floor time / engine time", ">= 1.0"),
    ("ad_decision_rps", "ad decision, requests/s", ""),
    ("ad_decision_p99_ms", "ad decision p99, ms", ""),
    ("ad_decision_ratio", "ad decision / consent check", ">= 0.5"),
    ("signals_events_per_s", "signals (1,000 a batch), events/s", ">= 50000"),
]


def met(value: float, goal: str) -> str:
    if not goal:
        return ""
    operator, _, number = goal.partition(" ")
    target = float(number)
    ok = value >= target if operator == ">=" else value <= target
    return "yes" if ok else "no"


def main() -> int:
    path = Path(OUT)
    if not path.exists():
        print(f"no figures in {OUT}")
        return 1
    figures = json.loads(path.read_text())
    print()
    print(f"{'figure':<44}{'value':>14}  {'goal':<10}{'met':<4}")
    for key, label, goal in ROWS:
        if key not in figures:
            continue
        value = float(figures[key])
        print(f"{label:<44}{value:>14,.2f}  {goal:<10}{met(value, goal):<4}")
    print(f"(all figures: {OUT})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
