"""Yosys synthesis of the RTL units for Xilinx 7-series: resource counts and a latch check.

    >>> from accel.rtl.synth import SV, synthesize                           # doctest: +SKIP
    >>> r = synthesize([SV / "fp32_pkg.sv", SV / "fp32_mul.sv"], "fp32_mul")  # doctest: +SKIP
    >>> r.luts > 0, r.dsp48e1, r.latches, r.latch_messages                     # doctest: +SKIP
    (True, 2, 0, ())
    >>> synthesize([SV / "lane_rng.sv"], "lane_rng", {"LANES": 16}).ffs        # doctest: +SKIP
    567

``python -m accel.rtl.synth`` synthesizes every unit of ``UNITS`` and prints the Markdown table
of docs/rtl.md ("Synthesis").

The flow is ``read_verilog -sv`` of the sources, ``chparam`` for the parameters and
``synth_xilinx -family xc7 -flatten -noiopad``: a unit out of context (no I/O buffers), its
submodules counted in it. Yosys comes from the distribution (``apt-get install yosys``; the RTL
is written for the subset that Yosys 0.23 reads, see docs/rtl.md); a missing ``yosys`` raises
:class:`SynthError` naming the install command, and a failed run raises it with Yosys's error
lines (e.g. ``fp32_pkg.sv:33: ERROR: syntax error, unexpected TOK_ID``). ``YOSYS`` in the
environment overrides the executable.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Sequence

from accel.rtl import CORE_SOURCES, SV

__all__ = ["SV", "INSTALL", "UNITS", "SynthError", "SynthReport", "synthesize", "synthesize_unit",
           "markdown_table"]

INSTALL = "apt-get install yosys"
TIMEOUT = 1800                      # seconds; a unit takes seconds, the whole core minutes

# The units and how they are synthesized: sources (in accel/rtl/sv/, packages first), parameters.
UNITS: dict[str, tuple[tuple[str, ...], dict[str, int]]] = {
    "fp32_add": (("fp32_pkg.sv", "fp32_add.sv"), {}),
    "fp32_mul": (("fp32_pkg.sv", "fp32_mul.sv"), {}),
    "fp32_div": (("fp32_pkg.sv", "fp32_div.sv"), {}),
    "fp32_ldexp": (("fp32_pkg.sv", "fp32_ldexp.sv"), {}),
    "fp32_rint": (("fp32_pkg.sv", "fp32_rint.sv"), {}),
    "fp32_cmp": (("fp32_pkg.sv", "fp32_cmp.sv"), {}),
    "lane_rng": (("lane_rng.sv",), {"LANES": 16}),
    "int_to_fp32": (("fp32_pkg.sv", "int_to_fp32.sv"), {"W": 48, "EW": 10}),
    "offset_update": (("fp32_pkg.sv", "offset_update.sv"), {"MAXBITS": 16}),
    "cosim_core": (tuple(p.name for p in CORE_SOURCES), {"P": 16, "LANES": 16, "CMAX": 16, "BMAX": 256}),
}

_LUTS = tuple(f"LUT{i}" for i in range(1, 7))
_FFS = ("FDRE", "FDSE", "FDCE", "FDPE")
_BRAMS = ("RAMB18E1", "RAMB36E1")
_LATCH = re.compile(r"^(\$_?a?dlatch|LDCE$|LDPE$)", re.IGNORECASE)     # $dlatch, $_DLATCH_P_, ...
_LATCH_MSG = re.compile(r"^\s*Latch inferred for signal .*$", re.MULTILINE)


class SynthError(RuntimeError):
    """Yosys is missing or failed on the sources; the message has the install command or its errors."""


@dataclass(frozen=True)
class SynthReport:
    """Resources of ``top`` after ``synth_xilinx -family xc7``; ``cells`` is the whole cell table."""

    top: str
    luts: int                       # LUT1 .. LUT6
    ffs: int                        # FDRE, FDSE, FDCE, FDPE
    dsp48e1: int
    bram: int                       # RAMB18E1 + RAMB36E1
    carry4: int
    latches: int                    # latch cells in the netlist ($dlatch, LDCE, LDPE, ...)
    latch_messages: tuple[str, ...] = ()    # Yosys's "Latch inferred for signal ..." lines
    cells: Mapping[str, int] = field(default_factory=dict)
    yosys_version: str = ""
    seconds: float = 0.0


def _yosys() -> str:
    exe = os.environ.get("YOSYS", "yosys")
    path = shutil.which(exe)
    if path is None:
        raise SynthError(f"Yosys ({exe}) is not installed or not on PATH; install it with: {INSTALL}")
    return path


def _quote(path: Path) -> str:
    return '"' + str(Path(path).resolve()) + '"'


def synthesize(sources: Sequence[Path], top: str, parameters: Mapping[str, int] = {}) -> SynthReport:
    """Synthesize ``top`` from ``sources`` for Xilinx 7-series with Yosys and count its cells."""
    exe = _yosys()
    start = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="cosim-synth-") as tmp:
        stat = Path(tmp) / "stat.json"
        script = [f"read_verilog -sv {' '.join(_quote(Path(s)) for s in sources)}",
                  *(f"chparam -set {k} {int(v)} {top}" for k, v in parameters.items()),
                  f"synth_xilinx -family xc7 -flatten -noiopad -top {top}",
                  "tee -q -o stat.json stat -json"]          # written into tmp, the cwd
        try:
            done = subprocess.run([exe, "-p", "; ".join(script)], capture_output=True, text=True,
                                  cwd=tmp, timeout=TIMEOUT, check=False)
        except subprocess.TimeoutExpired:
            raise SynthError(f"Yosys took more than {TIMEOUT} s on {top}") from None
        log = done.stdout + done.stderr
        if done.returncode != 0 or not stat.exists():
            errors = list(dict.fromkeys(line.strip() for line in log.splitlines() if "ERROR" in line))
            raise SynthError(f"Yosys failed on {top} (exit {done.returncode}):\n"
                             + "\n".join(errors or log.splitlines()[-20:]))
        report = json.loads(stat.read_text())
    module = report["modules"].get(f"\\{top}") or next(iter(report["modules"].values()))
    cells: dict[str, int] = dict(sorted(module.get("num_cells_by_type", {}).items()))

    def count(names: Sequence[str]) -> int:
        return sum(cells.get(n, 0) for n in names)
    return SynthReport(top=top, luts=count(_LUTS), ffs=count(_FFS), dsp48e1=cells.get("DSP48E1", 0),
                       bram=count(_BRAMS), carry4=cells.get("CARRY4", 0),
                       latches=sum(n for t, n in cells.items() if _LATCH.match(t)),
                       latch_messages=tuple(m.strip() for m in _LATCH_MSG.findall(log)),
                       cells=cells, yosys_version=report.get("creator", ""),
                       seconds=round(time.monotonic() - start, 1))


def synthesize_unit(name: str) -> SynthReport:
    """:func:`synthesize` of ``UNITS[name]``."""
    files, parameters = UNITS[name]
    return synthesize([SV / f for f in files], name, parameters)


def markdown_table(reports: Sequence[SynthReport]) -> str:
    """The resource table of docs/rtl.md, one row per report."""
    def params(top: str) -> str:
        return ", ".join(f"{k}={v}" for k, v in UNITS.get(top, ((), {}))[1].items())
    lines = ["| unit | LUT | FF | DSP48E1 | BRAM | CARRY4 | latches |", "|---|--:|--:|--:|--:|--:|--:|"]
    lines += [f"| `{r.top}`{f' ({params(r.top)})' if params(r.top) else ''} | {r.luts} | {r.ffs} | "
              f"{r.dsp48e1} | {r.bram} | {r.carry4} | {r.latches} |" for r in reports]
    return "\n".join(lines)


def main(argv: Sequence[str]) -> int:
    """Synthesize the units named in ``argv`` (all by default) and print the table."""
    names = list(argv) or list(UNITS)
    try:
        with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
            reports = list(pool.map(synthesize_unit, names))
    except SynthError as e:
        print(e, file=sys.stderr)
        return 1
    version = reports[0].yosys_version.split(" (")[0] if reports else "Yosys"
    print(f"{version}, `synth_xilinx -family xc7 -flatten -noiopad`, {time.strftime('%Y-%m-%d')}\n")
    print(markdown_table(reports))
    print("\n" + ", ".join(f"{r.top} {r.seconds:.1f} s" for r in reports), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
