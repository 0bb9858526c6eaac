"""Per-lane xorshift32 streams: the only source of random bits for stochastic rounding.

    >>> rng = LaneRNG(seed=42, epoch=0, lanes=4)
    >>> w = rng.words(10)          # element k comes from lane k % 4
    >>> w.dtype, w.shape
    (dtype('uint32'), (10,))

Recipe (shifts, XORs and, once per lane and epoch, adds; docs/numerics.md): lane l in epoch e
of run seed s starts from ``t = wang32((s & 0xffffffff) ^ (s >> 32) ^ ((e & 0xffff) << 16) ^
(l & 0xffff))`` (0 is replaced by 0x9E3779B9, the one state xorshift32 never leaves), then
discards 16 outputs. Each draw is ``x ^= x << 13; x ^= x >> 17; x ^= x << 5`` (32-bit) and
returns the new x.

Why the hash: xorshift32 is linear over GF(2), so the stream from t ^ u is the XOR of the
streams from t and u. Seeded with ``base ^ l`` directly, lanes 4k..4k+3 XOR to zero on every
draw (their seeds do), so a fourth of every stochastic-rounding word was a function of three
others. Thomas Wang's hash32shift (bijective, adds and shifts) makes short XOR relations among
lane seeds as rare as among random seeds.
"""
from __future__ import annotations

import numpy as np
from numba import njit

WARMUP = 16
ZERO_SEED_REPLACEMENT = 0x9E3779B9


@njit(cache=True)
def _step(x: np.uint32) -> np.uint32:
    x ^= np.uint32(x << np.uint32(13))
    x ^= np.uint32(x >> np.uint32(17))
    x ^= np.uint32(x << np.uint32(5))
    return x


@njit(cache=True)
def draw_rounds(st: np.ndarray, n: int, out: np.ndarray) -> None:
    """Advance the lane states ``st`` in place by ``n`` words in element order into ``out``.

    Round by round: the lanes of one round are independent, so the inner loop vectorises.
    Compiled kernels call this directly to draw a chunk at a time into a small buffer.
    Unsigned flat indices, not a row view per round: no negative-index checks and no view to
    build (twice the words per second).
    """
    lanes = st.shape[0]
    rounds = n // lanes
    for j in range(np.uint64(rounds)):
        base = j * np.uint64(lanes)
        for lane in range(np.uint64(lanes)):
            x = _step(st[lane])
            st[lane] = x
            out[base + lane] = x
    for lane in range(n - rounds * lanes):
        x = _step(st[lane])
        st[lane] = x
        out[rounds * lanes + lane] = x


@njit(cache=True)
def _draw(states: np.ndarray, n: int, out: np.ndarray) -> None:
    st = states.copy()  # a private copy: the compiler can see it does not alias ``out``
    draw_rounds(st, n, out)
    states[:] = st


def wang32(a: int) -> int:
    """Thomas Wang's hash32shift: a bijection of 32-bit words from adds, shifts and XORs.

        >>> hex(wang32(0)), hex(wang32(1))
        ('0xcaa3caa3', '0x12d60bf6')
    """
    m = 0xFFFFFFFF
    a &= m
    a = ((~a & m) + (a << 15)) & m  # (a << 15) - a - 1
    a ^= a >> 12
    a = (a + (a << 2)) & m
    a ^= a >> 4
    a = (a + (a << 3) + (a << 11)) & m  # a * 2057
    a ^= a >> 16
    return a


def lane_seed(seed: int, epoch: int, lane: int) -> int:
    """Initial xorshift32 state of one lane, before the warm-up."""
    t = wang32((seed & 0xFFFFFFFF) ^ (seed >> 32) ^ ((epoch & 0xFFFF) << 16) ^ (lane & 0xFFFF))
    return t or ZERO_SEED_REPLACEMENT


class LaneRNG:
    """``lanes`` independent xorshift32 streams seeded from (run seed, epoch, lane).

    ``words(n)`` hands element k the (k // lanes)-th draw of lane k % lanes within that call;
    lane states persist across calls (lanes with fewer elements draw fewer times).
    """

    def __init__(self, seed: int, epoch: int, lanes: int):
        if not (isinstance(seed, int) and 0 <= seed < 2**64):
            raise ValueError(f"seed must be an integer in [0, 2**64); got {seed!r}")
        if not (isinstance(epoch, int) and epoch >= 0):
            raise ValueError(f"epoch must be a non-negative integer; got {epoch!r}")
        if not (isinstance(lanes, int) and 1 <= lanes <= 65536):
            raise ValueError(f"lanes must be an integer 1..65536 (lane ids are 16 bits); got {lanes!r}")
        self.seed, self.epoch, self.lanes = seed, epoch, lanes
        self._states = np.array([lane_seed(seed, epoch, l) for l in range(lanes)], dtype=np.uint32)
        warm = np.empty(WARMUP * lanes, dtype=np.uint32)
        _draw(self._states, WARMUP * lanes, warm)

    @property
    def states(self) -> np.ndarray:
        """The lanes' current xorshift32 states (uint32, one per lane; kernels advance it)."""
        return self._states

    def words(self, n: int) -> np.ndarray:
        """The next ``n`` 32-bit words in element order (uint32 array)."""
        if not (isinstance(n, (int, np.integer)) and n >= 0):
            raise ValueError(f"n must be a non-negative integer; got {n!r}")
        out = np.empty(int(n), dtype=np.uint32)
        _draw(self._states, int(n), out)
        return out

    def __repr__(self) -> str:
        return f"LaneRNG(seed={self.seed}, epoch={self.epoch}, lanes={self.lanes})"
