"""Every training setting, declared once: name, kind, what it accepts, default or default rule, help.

    >>> SETTINGS["bits"].check(20)
    Traceback (most recent call last):
    ValueError: bits: an integer from 2 to 16; got 20
    >>> SETTINGS["step_size"].default_text
    "0.5/L from the data's smoothness bound"

:class:`host.train.TrainConfig` takes its fields from :data:`TRAINING` (``@fields_of``) and its
per-setting checks from :meth:`Setting.check`; ``cosim run`` makes its flags, ``--config`` keys,
resolved config.toml and the settings table of docs/host.md from the same declarations (and
declares its run options, such as ``backend``, the same way). What involves several settings
at once (a model that fits the data set, HALP's μ needing λ > 0) is TrainConfig.validate's.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Iterable

from host.algorithms import ALGORITHMS
from host.datasets import BUILTIN_TASKS
from host.models import MODELS
from host.recipes import RECIPES as NET_RECIPES
from host.recipes import ROLES as NET_ROLES
from host.recipes import parse_recipe
from host.scheduler import MU_RULES, POLICIES
from protocol.formats import parse_format
from protocol.messages import ROUNDINGS

# A setting's kind → what an error says is wanted (a TOML file can hold anything: `epochs =
# true` is not 1). ``tuple`` is a list of strings (``algorithms``).
KIND_WORDS: dict[type, str] = {str: "a string", int: "an integer", float: "a number",
                               tuple: "a list of strings"}


@dataclass(frozen=True)
class Accepts:
    """What a setting accepts beyond its kind. ``words`` say it (errors, --help, docs);
    ``test(value)`` is False for a value refused, or raises ValueError with its own reason."""

    words: str
    test: Callable[[Any], bool]


@dataclass(frozen=True)
class Setting:
    """One setting. ``default`` None means a rule sets it (``rule`` says which, in words)."""

    name: str
    kind: type                   # str, int, float, or tuple: a list of strings
    default: Any
    help: str                    # what it is, in a sentence
    accepts: Accepts | None = None
    rule: str = ""               # the default in words, where its value alone does not say it
    group: str = ""              # its heading in `cosim run --help`
    flags: tuple[str, ...] = ()  # command-line names when not --<name with '-'>

    @property
    def annotation(self) -> str:
        """Its type as a dataclass field: ``int``, ``float | None``, ``tuple[str, ...]``."""
        kind = "tuple[str, ...]" if self.kind is tuple else self.kind.__name__
        return kind if self.default is not None else f"{kind} | None"

    @property
    def default_text(self) -> str:
        """The default as the help and the docs say it: ``8``, ``halp``, or the rule."""
        if self.rule:
            return self.rule
        if isinstance(self.default, tuple):
            return ",".join(self.default)
        return f"{self.default:g}" if isinstance(self.default, float) else str(self.default)

    @property
    def option_names(self) -> tuple[str, ...]:
        """Its command-line names: ``--step-size``; ``--algorithm``, ``-a``."""
        return self.flags or (f"--{self.name.replace('_', '-')}",)

    def describe(self) -> str:
        """The --help text: what it is, what it accepts, its default."""
        accepts = f" {self.accepts.words[0].upper()}{self.accepts.words[1:]}." if self.accepts else ""
        return f"{self.help}{accepts} Default {self.default_text}."

    def check(self, value: Any) -> None:
        """Raise ValueError, one line naming the setting, what it accepts and ``value``, unless
        ``value`` is of its kind and accepted (None: only where a rule sets the default)."""
        if value is None and self.default is None:
            return
        if not _is_kind(value, self.kind):
            raise ValueError(f"{self.name}: {KIND_WORDS[self.kind]}; got {value!r}")
        if self.accepts is None:
            return
        try:
            accepted = self.accepts.test(value)
        except ValueError as exc:
            raise ValueError(f"{self.name}: {exc}") from None
        if not accepted:
            raise ValueError(f"{self.name}: {self.accepts.words}; got {value!r}")


def _is_kind(value: Any, kind: type) -> bool:
    if kind is tuple:
        return isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value)
    if isinstance(value, bool):           # a TOML true is not a number
        return False
    return isinstance(value, (int, float) if kind is float else kind)


def _bound(v: int) -> str:
    """An integer bound as people write it: 2^64 − 1, 2^20, 4096."""
    for k, text in ((v + 1, "2^{} − 1"), (v, "2^{}")):
        if v > 4096 and k & (k - 1) == 0:
            return text.format(k.bit_length() - 1)
    return str(v)


def between(lo: int, hi: int | None = None) -> Accepts:
    """Integers from ``lo`` to ``hi`` (no upper bound when None)."""
    if hi is None:
        return Accepts(f"an integer >= {lo}", lambda v: v >= lo)
    return Accepts(f"an integer from {lo} to {_bound(hi)}", lambda v: lo <= v <= hi)


def above(lo: float, *, or_equal: bool = False) -> Accepts:
    """Finite numbers > ``lo`` (>= with ``or_equal``)."""
    def test(v: float) -> bool:
        try:
            return math.isfinite(v) and (v >= lo if or_equal else v > lo)
        except OverflowError:             # an integer beyond float64
            return False
    return Accepts(f"a finite number {'>=' if or_equal else '>'} {lo:g}", test)


def one_of(choices: Iterable[str]) -> Accepts:
    """One of ``choices``."""
    choices = tuple(choices)
    return Accepts(f"choose one of {', '.join(choices)}", lambda v: v in choices)


def _parses(text: str) -> bool:
    parse_format(text)                    # FormatError (a ValueError) says what is wrong
    return True


def is_model(text: str) -> bool:
    """A linear model's name or a network spec (host/nets.py, imported only for one: torch is slow to load)."""
    if text in MODELS:
        return True
    from host.nets import parse_spec
    try:
        parse_spec(text)
    except ValueError:
        return False
    return True


NUMBER_FORMAT = Accepts("a number format, e.g. fixed<2,6>, e4m3fn or fp32 (docs/numerics.md)", _parses)
_BOUNDED = 2**31 - 1                      # counts that travel as int32 or size an epoch's order

# In TrainConfig's field order (a resolved config.toml lists them so). Integer bounds: beyond
# them a run could not complete or be recorded.
TRAINING: tuple[Setting, ...] = (
    Setting("dataset", str, "digits", "The data set; an .npz file holds arrays x (n × d) and y (n).",
            Accepts(f"choose one of {', '.join(BUILTIN_TASKS)} or a path to a .npz file",
                    lambda v: v in BUILTIN_TASKS or v.endswith(".npz")), group="Problem"),
    Setting("model", str, "softmax", "The model fitted: a linear model, or a network (docs/host.md, Networks).",
            Accepts(f"choose one of {', '.join(MODELS)}, or a network mlp:W[,W...] (ReLU hidden layers of "
                    "those widths) or cnn", is_model), group="Problem"),
    Setting("algorithms", tuple, ("halp",),
            "Algorithms run in turn, comma-separated: sgd and svrg on the host in float64, lpsgd, "
            "lpsvrg and halp with their inner loop on the accelerator; for networks mixed (float64 "
            "weights, the accelerator's low-precision gradients) and lpsgd.",
            Accepts(f"a non-empty list without repeats from {', '.join(ALGORITHMS)}",
                    lambda v: bool(v) and set(v) <= set(ALGORITHMS) and len(set(v)) == len(v)),
            group="Training", flags=("--algorithm", "-a")),
    Setting("bits", int, 8, "Accelerator word length b: offsets fixed<1,b-1>, data fixed<IL,b-IL>.",
            between(2, 16), group="Accelerator"),
    Setting("rounding", str, "stochastic", "Offset rounding (the backends run stochastic and "
            "nearest_even; the format library has all seven IEEE-style modes).", one_of(ROUNDINGS),
            group="Accelerator"),
    Setting("rbits", int, 0, "Random bits per stochastic rounding.", between(0, 32),
            rule="0, the whole discarded width (up to 32 bits)", group="Accelerator"),
    Setting("epochs", int, 20, "Outer epochs per algorithm.", between(1, 10**6), group="Training"),
    Setting("seed", int, 0, "Run seed: sample order, synthetic data and the accelerator's random bits.",
            between(0, 2**64 - 1), group="Training"),
    Setting("l2", float, 1e-2, "L2 regularisation λ.", above(0, or_equal=True), group="Training"),
    Setting("step_size", float, None, "Step size α.", above(0),
            rule="0.5/L from the data's smoothness bound", group="Training"),
    Setting("mu", float, None, "HALP's μ in δ = ‖g̃‖/(μ·max): the offset range is ±‖g̃‖/μ.", above(0),
            rule="10λ; on networks 1 (calibrated on digits)", group="Training"),
    Setting("mu_rule", str, None, "How HALP's μ moves: widen halves it after every epoch whose "
            "offsets saturated, down to λ; fixed keeps it, as the HALP paper does.", one_of(MU_RULES),
            rule="widen; on networks fixed", group="Training"),
    Setting("inner_steps", int, None, "Inner steps T per epoch.", between(1, _BOUNDED),
            rule="n, one pass over the data", group="Training"),
    Setting("batch_size", int, 1, "Minibatch size B (at most n; T·B sample indices travel per epoch).",
            between(1, _BOUNDED), group="Training"),
    Setting("sync_every", int, 1, "mixed (networks): the host sends its float64 weights every K steps; in "
            "between, the accelerator takes K low-precision SGD steps on its own copy and returns the sum "
            "of their gradients.", between(1, _BOUNDED), rule="1, every step", group="Training"),
    Setting("data_format", str, None, "Accelerator data format.", NUMBER_FORMAT,
            rule="fixed<IL,b-IL> with the smallest IL whose range holds max|x|", group="Accelerator"),
    Setting("offset_format", str, None, "Accelerator offset format.", NUMBER_FORMAT,
            rule="fixed<1,b-1>", group="Accelerator"),
    Setting("acc_format", str, "fp32", "Accelerator accumulator and vector format.", NUMBER_FORMAT,
            group="Accelerator"),
    Setting("recipe", str, "fp8-ibm", "Networks on the accelerator (mixed, lpsgd, halp): the number format of "
            "each tensor role of the layer kernel, a preset with any role overridden.",
            Accepts(f"one of {', '.join(NET_RECIPES)}, optionally with role=value overrides after ':' "
                    f"(roles {', '.join(NET_ROLES)}), e.g. fp8-ibm:acc=fp32,chunk=0", lambda v: bool(parse_recipe(v))),
            group="Accelerator"),
    Setting("lanes", int, 16, "Accelerator lanes (random-bit streams).", between(1, 4096),
            group="Accelerator"),
    Setting("policy", str, None, "Precision scheduler: when to re-scale the offset grid or change its "
            "format (docs/host.md, Scheduler policies).", one_of(POLICIES), rule="the algorithm's own: recentre for halp, fixed for lpsgd and lpsvrg",
            group="Training"),
    Setting("samples", int, 1000, "Synthetic data sets: number of samples n.", between(2, _BOUNDED),
            group="Problem"),
    Setting("features", int, 20, "Synthetic data sets: number of features.", between(1, 2**20),
            group="Problem"),
    Setting("condition", float, 100.0, "Synthetic data sets: condition number of the feature covariance.",
            above(0), group="Problem"),
    Setting("classes", int, 10, "synthetic_softmax: number of classes.", between(2, 4096), group="Problem"),
    Setting("timeout", float, 60.0, "Seconds to wait for any accelerator reply before giving up.",
            above(0), group="Accelerator"),
)
SETTINGS = {s.name: s for s in TRAINING}


def fields_of(settings: Iterable[Setting]) -> Callable[[type], type]:
    """A class decorator: ``settings`` become the class's dataclass fields, in order, with their
    defaults and annotations; the class body keeps its methods."""
    def decorate(cls: type) -> type:
        declared = tuple(settings)
        cls.__annotations__ = {s.name: s.annotation for s in declared}
        for s in declared:
            setattr(cls, s.name, s.default)
        return dataclass(cls)
    return decorate
