"""The usage examples in module docstrings run as written (those that need no daemon)."""
import doctest
import importlib

import pytest

MODULES = [
    "protocol.formats", "protocol.messages", "protocol.codec", "protocol.capabilities",
    "accel.spec.counts", "accel.spec.arith", "accel.spec.backend", "accel.spec.nonlinear",
    "accel.spec.accuracy", "accel.spec.layer", "accel.backends.layer_compiled",
    "accel.backends", "accel.backends.emulated", "accel.daemon", "accel.bus", "accel.etherbone",
    "accel.numerics", "accel.numerics.accumulate", "accel.numerics.arith",
    "accel.numerics.codec", "accel.numerics.doubleword", "accel.numerics.quantize",
    "accel.numerics.rng", "accel.numerics.rounding", "host.datasets", "host.scheduler", "host.recipes",
    "cosim.launch",
]


@pytest.mark.parametrize("name", MODULES)
def test_examples_run(name):
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0
