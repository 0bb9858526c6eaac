"""Accelerator backends by name, each with the capabilities it announces.

    >>> names()
    ('emulated', 'rtl')
    >>> capabilities("emulated").check_format("acc", "fp32")
    fp32
    >>> backend_class("emulated").__name__
    'EmulatedBackend'

Capabilities are declared here, beside the name, so the CLI can check a run against them
without importing a backend (the emulated one compiles kernels on import). A backend class is
imported on first use and passes :func:`accel.spec.register` (the whole interface, or a
``TypeError`` naming what is missing) before it is used.
"""
from __future__ import annotations

import importlib

from accel.spec import OFFSET_ROUNDINGS, SPEC_VERSION, Backend, register
from protocol.capabilities import FamilyRule, KernelCapabilities, RoleRule

# The emulated backend holds the data at its format's width (accel.backends.packed: 1 byte an
# element up to 8 bits, 2 up to 16, else 4 or 8): max_data_bytes bounds that memory at 4 GiB, for
# example 10^6 samples × 4096 features of 8-bit data.
_EMULATED = KernelCapabilities(
    backend="emulated", spec=SPEC_VERSION,
    roles={
        "data": RoleRule((FamilyRule("fixed", max_bits=32),
                          FamilyRule("float", max_exp_bits=8, max_man_bits=23, exp_range=(-400, 400)))),
        # Step 7 forms q − t in fixed<IL+3,FL>, exact in float64 up to 53 bits.
        "offset": RoleRule((FamilyRule("fixed", signed=(True,), max_bits=50),), roundings=OFFSET_ROUNDINGS),
        # float64-then-R is the correctly rounded operation for p <= 25 (and fp64 is native).
        "acc": RoleRule((FamilyRule("float", max_man_bits=24, exp_range=(-400, 400)),), presets=("fp64",)),
    },
    exact_dot_bits=54,        # float64 holds every integer of magnitude <= 2^53 exactly
    exact_product_bits=53,    # a float64 product of operands with p1 + p2 <= 53 bits is exact
    limits={"max_samples": 1 << 26, "max_features": 1 << 16, "max_outputs": 1 << 12,
            "max_elements": 1 << 32, "max_data_bytes": 1 << 32,
            # Networks (configure_net, accel.backends.net): parameters in all layers. A backend
            # that does not announce it runs no networks.
            "max_net_params": 1 << 24},
)

# The RTL core (accel/rtl, docs/rtl.md): signed fixed-point data and offset of up to 16 bits,
# binary32 accumulation. Its exact dot register is 48 bits (16-bit data times a 17-bit dq, summed
# over up to 2^14 features) and its multiplier forms the exact 48-bit significand product. The
# limits are its windows' sizes; the driver refuses what the padded layout does not fit.
_RTL = KernelCapabilities(
    backend="rtl", spec=SPEC_VERSION,
    roles={
        "data": RoleRule((FamilyRule("fixed", signed=(True,), max_bits=16),)),
        "offset": RoleRule((FamilyRule("fixed", signed=(True,), max_bits=16),), roundings=OFFSET_ROUNDINGS),
        "acc": RoleRule((), presets=("fp32",)),
    },
    exact_dot_bits=48,
    exact_product_bits=48,
    limits={"max_samples": 1 << 16, "max_features": 4096, "max_outputs": 16, "max_elements": 1 << 18},
)

_ENTRIES: dict[str, tuple[str, KernelCapabilities]] = {
    "emulated": ("accel.backends.emulated:EmulatedBackend", _EMULATED),
    "rtl": ("accel.backends.rtl:RtlBackend", _RTL),
}
_LOADED: dict[str, tuple[type, KernelCapabilities]] = {}


def names() -> tuple[str, ...]:
    return tuple(_ENTRIES)


def _entry(name: str) -> tuple[str, KernelCapabilities]:
    if name not in _ENTRIES:
        raise ValueError(f"unknown backend {name!r}; available: {', '.join(_ENTRIES)}")
    return _ENTRIES[name]


def capabilities(name: str) -> KernelCapabilities:
    """What backend ``name`` accepts (no import of the backend itself)."""
    return _entry(name)[1]


def data_bytes(name: str, fmt) -> int:
    """Bytes backend ``name`` holds one data element of ``fmt`` in (what ``max_data_bytes`` counts)."""
    if name == "emulated":
        from accel.backends.packed import bytes_per_element
        return bytes_per_element(fmt)
    return 2      # the RTL core's data memory: 16-bit words


def backend_class(name: str) -> type[Backend]:
    """The registered class of backend ``name``, imported and checked on first use."""
    if name not in _LOADED:
        path, caps = _entry(name)
        module, cls_name = path.split(":")
        register(name, getattr(importlib.import_module(module), cls_name), capabilities=caps,
                 registry=_LOADED)
    return _LOADED[name][0]
