"""cocotb bench for ``lane_rng.sv`` against :class:`accel.numerics.LaneRNG` (any LANES).

Run through ``test_rtl_lane_rng.py`` (pytest), which builds the design and names this module.
Inputs change just after a falling edge, outputs are read in the read-only phase after a
rising edge, so every cycle's sample is unambiguous. The clock runs in C.
"""
from __future__ import annotations

import random

import cocotb
import numpy as np
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, FallingEdge, ReadOnly, RisingEdge

from accel.numerics import LaneRNG
from accel.numerics.rng import WARMUP, ZERO_SEED_REPLACEMENT, lane_seed

MASK64 = (1 << 64) - 1
# (seed, epoch): extremes, halves that cancel (0xDEADBEEF twice folds to seed 0), a seed whose
# lane 0 hashes to zero in epoch 0 (the replacement state), epochs past 16 bits.
CASES = [(0, 0), (0, 1), (MASK64, 0), (MASK64, 0xFFFF), (0xDEADBEEF_DEADBEEF, 0),
         (0x01234567_89ABCDEF, 7), (0xBFFF7FFF, 0), (1 << 63, 0x12345), (0xFFFFFFFF, 3)]
DRAW_CYCLES = 300


def lanes_of(dut) -> int:
    return len(dut.words) // 32


def lane_words(dut) -> np.ndarray:
    value = dut.words.value.to_unsigned()
    return np.array([(value >> (32 * l)) & 0xFFFFFFFF for l in range(lanes_of(dut))], dtype=np.uint32)


def is_ready(dut) -> bool:
    return int(dut.ready.value) == 1


async def begin(dut) -> None:
    """Start the clock, hold reset for two cycles, leave inputs idle."""
    Clock(dut.clk, 10, unit="ns").start()
    dut.rst.value, dut.start.value, dut.next.value = 1, 0, 0
    dut.seed.value, dut.epoch.value = 0, 0
    await ClockCycles(dut.clk, 2)
    await FallingEdge(dut.clk)
    dut.rst.value = 0


async def start(dut, seed: int, epoch: int) -> None:
    """Pulse start for one cycle; returns just after the falling edge that ends the pulse."""
    await FallingEdge(dut.clk)
    dut.seed.value, dut.epoch.value, dut.start.value = seed, epoch & 0xFFFF, 1
    await FallingEdge(dut.clk)
    dut.start.value = 0


async def await_ready(dut) -> None:
    """After ``start``: ready is low until exactly LANES + WARMUP edges after the start edge."""
    latency = lanes_of(dut) + WARMUP
    await ReadOnly()
    assert not is_ready(dut), "ready must fall on the start edge"
    await ClockCycles(dut.clk, latency - 1)
    await ReadOnly()
    assert not is_ready(dut), f"ready rose before {latency} cycles"
    await RisingEdge(dut.clk)
    await ReadOnly()
    assert is_ready(dut), f"ready not high {latency} cycles after start"


async def draw(dut, pattern: list[int]) -> list[np.ndarray]:
    """Per cycle, advance the first ``pattern[k]`` lanes (1: all of them); the words after each edge."""
    seen, lanes = [], lanes_of(dut)
    for n in pattern:
        await FallingEdge(dut.clk)
        dut.next.value = (1 << (lanes if n == 1 else n)) - 1
        await RisingEdge(dut.clk)
        await ReadOnly()
        seen.append(lane_words(dut))
    await FallingEdge(dut.clk)
    dut.next.value = 0
    return seen


def expected(rng: LaneRNG, pattern: list[int]) -> list[np.ndarray]:
    """The model's words per cycle: a round of LANES elements (1), or of the first n lanes."""
    out, current = [], rng.states.copy()
    for n in pattern:
        if n:
            rng.words(rng.lanes if n == 1 else n)    # element k of the round is lane k
            current = rng.states.copy()
        out.append(current)
    return out


def assert_same(got: list[np.ndarray], want: list[np.ndarray], what: str) -> None:
    for cycle, (g, w) in enumerate(zip(got, want, strict=True)):
        if not np.array_equal(g, w):
            lane = int(np.flatnonzero(g != w)[0])
            raise AssertionError(f"{what}: cycle {cycle} lane {lane}: RTL {int(g[lane]):#010x}, "
                                 f"model {int(w[lane]):#010x}")


@cocotb.test()
async def test_reset_values(dut):
    """After reset: ready low, every lane 0, next ignored; a later reset clears a live stream."""
    await begin(dut)
    await ReadOnly()
    assert not is_ready(dut) and not lane_words(dut).any()
    assert_same(await draw(dut, [1, 1, 0, 1]), [np.zeros(lanes_of(dut), np.uint32)] * 4, "next before start")
    await start(dut, 12345, 6)
    await await_ready(dut)
    await draw(dut, [1] * 3)
    await FallingEdge(dut.clk)
    dut.rst.value, dut.next.value = 1, (1 << lanes_of(dut)) - 1
    await RisingEdge(dut.clk)
    await ReadOnly()
    assert not is_ready(dut) and not lane_words(dut).any(), "reset must clear ready and the lanes"
    await FallingEdge(dut.clk)
    dut.rst.value, dut.next.value = 0, 0


@cocotb.test()
async def test_streams_match_model(dut):
    """Per seed and epoch: the warmed-up states, then every cycle of a next pattern with gaps."""
    await begin(dut)
    lanes, rand = lanes_of(dut), random.Random(1)
    for seed, epoch in CASES:
        rng = LaneRNG(seed, epoch, lanes)
        await start(dut, seed, epoch)
        await await_ready(dut)
        assert_same([lane_words(dut)], [rng.states], f"seed {seed:#x} epoch {epoch:#x} warm-up")
        # Whole rounds, gaps, and partial rounds (a step whose element count is not a multiple
        # of the lanes draws from its first lanes only).
        pattern = [rand.choice([0, 1, 1, 1, 1, 1, 2, lanes - 1]) for _ in range(DRAW_CYCLES)]
        assert_same(await draw(dut, pattern), expected(rng, pattern), f"seed {seed:#x} epoch {epoch:#x}")


@cocotb.test()
async def test_special_seeds(dut):
    """Halves that cancel alias (as documented); a lane seed hashing to 0 gets the replacement."""
    await begin(dut)
    lanes = lanes_of(dut)
    assert lane_seed(0xBFFF7FFF, 0, 0) == ZERO_SEED_REPLACEMENT     # the model case the RTL must match
    streams = []
    for seed in (0, 0xDEADBEEF_DEADBEEF, 0x00000005_00000003, 0x00000006_00000000):
        await start(dut, seed, 2)
        await await_ready(dut)
        streams.append(await draw(dut, [1] * 8))
    assert_same(streams[1], streams[0], "s with equal halves vs seed 0")
    assert_same(streams[3], streams[2], "5:3 vs 6:0 (both fold to 6)")
    assert not all(np.array_equal(a, b) for a, b in zip(streams[0], streams[2])), "distinct folds differ"
    await start(dut, 0xBFFF7FFF, 0)
    await await_ready(dut)
    assert_same([lane_words(dut)], [LaneRNG(0xBFFF7FFF, 0, lanes).states], "zero-hash lane")


@cocotb.test()
async def test_start_reseeds(dut):
    """start restarts from any state (mid-stream, mid-seeding, together with next)."""
    await begin(dut)
    lanes = lanes_of(dut)
    await start(dut, 99, 1)
    await await_ready(dut)
    await draw(dut, [1] * 20)
    # Mid-stream: a new epoch starts over from its own warm-up.
    await start(dut, 99, 2)
    await await_ready(dut)
    assert_same(await draw(dut, [1] * 10), expected(LaneRNG(99, 2, lanes), [1] * 10), "re-seed mid-stream")
    # Mid-seeding, with next pulsed while not ready: the second start's seed wins, next is ignored.
    await start(dut, 1, 1)
    await draw(dut, [1, 0, 1])
    await start(dut, 2**40 + 17, 9)
    await await_ready(dut)
    assert_same(await draw(dut, [1] * 10), expected(LaneRNG(2**40 + 17, 9, lanes), [1] * 10),
                "start during seeding")
    # start and next in the same cycle: start wins, and the words match a fresh start.
    await FallingEdge(dut.clk)
    dut.seed.value, dut.epoch.value, dut.start.value, dut.next.value = 5, 5, 1, (1 << lanes) - 1
    await FallingEdge(dut.clk)
    dut.start.value, dut.next.value = 0, 0
    await await_ready(dut)
    assert_same([lane_words(dut)], [LaneRNG(5, 5, lanes).states], "start with next")


@cocotb.test()
async def test_long_run(dut):
    """next held for many cycles under one trigger: the final words match the model's."""
    await begin(dut)
    lanes, cycles = lanes_of(dut), 50_000
    await start(dut, 0x5EED_0000_0000_0001, 31)
    await await_ready(dut)
    await FallingEdge(dut.clk)
    dut.next.value = (1 << lanes) - 1
    await ClockCycles(dut.clk, cycles)
    await ReadOnly()
    got = lane_words(dut)
    want = LaneRNG(0x5EED_0000_0000_0001, 31, lanes).words(cycles * lanes)[-lanes:]
    assert_same([got], [want], f"after {cycles} draws")
    await FallingEdge(dut.clk)
    dut.next.value = 0
