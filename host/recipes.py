"""Low-precision recipes for networks on the accelerator, as the format strings a host sends.

    >>> RECIPES["fp8-ibm"]["update"], RECIPES["fp8-ibm"]["chunk"]
    ('fp16_ibm', 64)
    >>> r = parse_recipe("fp8-ibm:acc=fp32,chunk=0")       # a preset, then role=value overrides
    >>> r["acc"], r["chunk"], r["weights"]
    ('fp32', 0, 'fp8_ibm')

A recipe names the number format of each tensor role of the layer kernel (weights,
activations, errors, weight_grads, acc with its chunk, update with its rounding). The host
cannot import the accelerator's own table (``accel.spec.layer.RECIPES``), so it keeps the
same recipes as strings and sends them in ``configure_net``; the accelerator checks them
(which pairs multiply exactly, which formats its kernel holds) and refuses what it cannot run.
"""
from __future__ import annotations

from protocol.formats import parse_format
from protocol.messages import ROUNDINGS

# Wang et al., "Training Deep Neural Networks with 8-bit Floating Point Numbers" (NeurIPS 2018):
# (1,5,2) weights, activations and errors; (1,6,9) accumulation in chunks of 64 and a (1,6,9)
# master copy updated with stochastic rounding.
RECIPES: dict[str, dict[str, str | int]] = {
    "fp8-ibm": {"weights": "fp8_ibm", "activations": "fp8_ibm", "errors": "fp8_ibm",
                "weight_grads": "fp16_ibm", "acc": "fp16_ibm", "chunk": 64, "update": "fp16_ibm",
                "rounding": "stochastic"},
    # The same without chunks: one (1,6,9) sum per dot product, the swamping chunks avoid
    # (bench/claim_swamping.py measures what it costs on a fan-in of 4096).
    "fp8-ibm-nochunk": {"weights": "fp8_ibm", "activations": "fp8_ibm", "errors": "fp8_ibm",
                        "weight_grads": "fp16_ibm", "acc": "fp16_ibm", "chunk": 0, "update": "fp16_ibm",
                        "rounding": "stochastic"},
}
ROLES = tuple(RECIPES["fp8-ibm"])       # the keys every recipe has, in configure_net's order


def parse_recipe(text: str) -> dict[str, str | int]:
    """The roles' formats of ``text``: a preset's name, optionally followed by ``:`` and
    comma-separated ``role=value`` overrides (a number format for weights, activations, errors,
    weight_grads, acc and update; an integer ≥ 0 for chunk, 0 meaning one sum; one of the
    protocol's roundings for rounding).

    Raises:
        ValueError: naming the part of ``text`` that is wrong and what it accepts.
    """
    name, _, overrides = text.partition(":")
    if name not in RECIPES:
        raise ValueError(f"{name!r} is not a recipe; start with one of {', '.join(RECIPES)}")
    recipe = dict(RECIPES[name])
    for part in filter(None, (p.strip() for p in _top_level(overrides))):
        role, eq, value = (s.strip() for s in part.partition("="))
        if not eq or role not in ROLES:
            raise ValueError(f"{part!r}: overrides are role=value with a role among {', '.join(ROLES)}")
        if role == "chunk":
            if not (value.isdigit() and int(value) < 2**31):
                raise ValueError(f"chunk={value}: the terms per partial sum, an integer >= 0 (0: one sum)")
            recipe[role] = int(value)
        elif role == "rounding":
            if value not in ROUNDINGS:
                raise ValueError(f"rounding={value}: choose one of {', '.join(ROUNDINGS)}")
            recipe[role] = value
        else:
            recipe[role] = repr(parse_format(value))    # FormatError (a ValueError) says what is wrong
    return recipe


def _top_level(text: str) -> list[str]:
    """``text`` split at the commas outside ``<…>`` (a format such as float<4,3,fn> has its own)."""
    parts, depth, start = [], 0, 0
    for i, ch in enumerate(text):
        depth += (ch == "<") - (ch == ">")
        if ch == "," and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    return [*parts, text[start:]]
