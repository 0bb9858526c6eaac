"""bench/claim_swamping.py at CI size: the same data rule, model and recipes, fewer samples and epochs."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

# bench/ is not a package: load the script by path rather than putting bench/ on sys.path.
_spec = importlib.util.spec_from_file_location(
    "claim_swamping", Path(__file__).resolve().parents[1] / "bench" / "claim_swamping.py")
claim = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(claim)


@pytest.mark.slow
def test_without_chunks_the_accelerator_reports_far_more_swamped_adds(tmp_path):
    runs = claim.measure(epochs=2, samples=300)
    chunked, plain = runs["chunk 64"], runs["no chunk"]
    assert [r["epoch"] for r in chunked] == [r["epoch"] for r in plain] == [0, 1, 2]
    assert chunked[0] == plain[0]                         # the same start, evaluated in float64
    for c, p in zip(chunked[1:], plain[1:]):
        # the same products: chunks add one partial per 64 terms, so chunk 64 counts more adds
        assert p["adds"] < c["adds"] < 1.1 * p["adds"]
        assert p["swamped"] > 10 * c["swamped"] > 0
    claim.plot(runs, tmp_path / "s.png")
    assert (tmp_path / "s.png").stat().st_size > 10_000
    assert "no chunk swamped/adds" in claim.table(runs)
