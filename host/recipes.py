"""Low-precision recipes for networks on the accelerator, as the format strings a host sends.

    >>> RECIPES["fp8-ibm"]["update"], RECIPES["fp8-ibm"]["chunk"]
    ('fp16_ibm', 64)

A recipe names the number format of each tensor role of the layer kernel (weights,
activations, errors, weight_grads, acc with its chunk, update with its rounding). The host
cannot import the accelerator's own table (``accel.spec.layer.RECIPES``), so it keeps the
same recipes as strings and sends them in ``configure_net``; the accelerator checks them.
"""
from __future__ import annotations

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
