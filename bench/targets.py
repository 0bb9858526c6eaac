"""One line per benchmark target, printed and collected for ``make bench``'s summary table.

    from targets import target
    target("bench_quantize", "bf16 nearest-even / ml_dtypes", 1.62, ">= 1.5")   # prints, records

A target is a comparison written as text (``">= 1.5"``, ``"<= 3"``, ``"< 10"``): the value is
checked against it here, so every benchmark decides "met" the same way. When the environment
variable ``COSIM_BENCH_TARGETS`` names a file, each target is appended to it as one JSON line;
``bench/run_all.py`` sets it, runs every benchmark and prints the table.
"""
from __future__ import annotations

import json
import operator
import os

ENV = "COSIM_BENCH_TARGETS"
_OPS = {">=": operator.ge, "<=": operator.le, ">": operator.gt, "<": operator.lt}


def met(value: float, target: str) -> bool:
    """Whether ``value`` meets ``target`` (an operator of >=, <=, >, < and a number)."""
    op, _, bound = target.strip().partition(" ")
    try:
        return _OPS[op](value, float(bound))
    except (KeyError, ValueError):
        raise ValueError(f"target {target!r} must be one of {', '.join(_OPS)}, a space and a number") from None


def target(bench: str, name: str, value: float, target: str, moonshot: str | None = None) -> bool:
    """Print one target's line (and append it to $COSIM_BENCH_TARGETS); returns whether it is met."""
    ok = met(value, target)
    extra = f"; moonshot {moonshot}: {'met' if met(value, moonshot) else 'not met'}" if moonshot else ""
    print(f"target: {name} = {value:.3g} (target {target}: {'met' if ok else 'MISSED'}{extra})", flush=True)
    path = os.environ.get(ENV)
    if path:
        with open(path, "a", encoding="utf-8") as f:
            f.write(json.dumps({"bench": bench, "name": name, "value": value, "target": target,
                                "met": ok, "moonshot": moonshot}) + "\n")
    return ok
