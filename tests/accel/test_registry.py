"""The backend registry: the interface is enforced when a class is registered."""
from __future__ import annotations

import numpy as np
import pytest

from accel import backends
from accel.backends.emulated import EmulatedBackend
from accel.daemon import Daemon
from accel.spec import Backend, register
from accel.spec.backend import INTERFACE


class Incomplete(Backend):
    """A backend that forgot most of its job."""

    name = "incomplete"

    def configure(self, cfg):
        return cfg.scale

    def fetch(self):
        raise NotImplementedError


class DuckTyped:
    """Not a Backend subclass and missing run_epoch and restore: refused the same way."""

    def configure(self, cfg): ...
    def load_data(self, start, x, y): ...
    def recentre(self, full_grad, anchor, scale): ...
    def promote(self, offset, acc): ...
    def fetch(self): ...


class WrongSignature(EmulatedBackend):
    def run_epoch(self, algorithm, epoch, steps, step_size, order):   # no batch_size
        raise AssertionError


def test_an_incomplete_backend_is_refused_naming_what_is_missing():
    registry: dict = {}
    with pytest.raises(TypeError, match="Incomplete does not implement load_data, promote, recentre, "
                                        "restore, run_epoch of accel.spec.Backend"):
        register("incomplete", Incomplete, capabilities=None, registry=registry)
    with pytest.raises(TypeError, match="DuckTyped does not implement restore, run_epoch"):
        register("duck", DuckTyped, capabilities=None, registry=registry)
    with pytest.raises(TypeError, match="WrongSignature.run_epoch take other arguments"):
        register("wrong", WrongSignature, capabilities=None, registry=registry)
    assert registry == {}
    assert INTERFACE == ("configure", "fetch", "load_data", "promote", "recentre", "restore", "run_epoch")


def test_a_complete_backend_is_registered():
    registry: dict = {}
    caps = backends.capabilities("emulated")
    assert register("copy", EmulatedBackend, capabilities=caps, registry=registry) is EmulatedBackend
    assert registry == {"copy": (EmulatedBackend, caps)}


def test_unknown_backends_are_named():
    with pytest.raises(ValueError, match="unknown backend 'pcie'; available: emulated, rtl"):
        Daemon("pcie")
    with pytest.raises(ValueError, match="available: emulated, rtl"):
        backends.capabilities("fpga")


def test_capabilities_reply_carries_the_spec_and_the_rules():
    from protocol.capabilities import KernelCapabilities
    caps = Daemon().capabilities()
    assert caps.spec == [2, 0] and caps.backend == "emulated"
    parsed = KernelCapabilities.from_message(caps)
    assert parsed.roles == backends.capabilities("emulated").roles
    assert parsed.exact_dot_bits == 54 and parsed.limits["max_features"] == 1 << 16
    assert parsed.limits["max_message_bytes"] > 0          # the server's limits join the backend's
    assert caps.formats[1].startswith("offset: fixed<IL,FL> signed, saturating")
    assert np.all([r in caps.roles for r in ("data", "offset", "acc")])
