"""The update statistics' definition on constructed steps (accel.spec.gradstats); that every
backend computes them alike is the conformance suite's part."""
import numpy as np

from accel.backends.emulated import offset_round
from accel.spec.gradstats import BINADE_FLOOR, UpdateStats, UpdateTally, binade_slots
from protocol.formats import FixedFormat


def test_a_step_of_ties_tiny_clamped_and_zero_updates():
    """fixed<2,2>: grid ε = 1/4, |t| clamped to 2^3. A tie at q = 2/4 rounds back to q (code 2
    is even: vanished), at q = 1/4 away from it (moved); 0.1 < ε/2 vanishes; 2^-140 vanishes and
    counts in the lowest binade; 100 counts as 8 = 2^(IL+1); t = 0 is no update to vanish."""
    fmt = FixedFormat(2, 2)
    q = np.array([0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.25])
    t = np.array([0.125, 0.1, 0.2, 100.0, 2.0**-140, 0.0, 0.125])
    rounded = offset_round(q, t, fmt, "nearest_even")
    assert rounded.tolist() == [0.5, 0.5, 0.25, -7.5, 0.5, 0.5, 0.0]
    tally = UpdateTally(fmt)
    tally.add(t, q, rounded)
    assert tally.result() == UpdateStats(updates=7, vanished=3, update_min=2.0**-140, update_max=8.0,
                                         binades={BINADE_FLOOR: 1, -2: 1, -1: 3, 5: 1})


def test_steps_add_up_and_an_epoch_of_zeros_has_no_extremes():
    fmt = FixedFormat(1, 7)
    tally = UpdateTally(fmt)
    zeros = np.zeros((3, 2))
    tally.add(zeros, zeros, zeros)
    assert tally.result() == UpdateStats(updates=6)
    tally.add(np.array([[-2.0**-9, 3.0], [0.0, 2.0**-7]]), np.zeros((2, 2)), np.array([[0.0, -2.0], [0.0, -2.0**-7]]))
    assert tally.result() == UpdateStats(updates=10, vanished=1, update_min=2.0**-9, update_max=3.0,
                                         binades={-2: 1, 0: 1, 8: 1})
    assert tally.counts.size == binade_slots(fmt) == 8 + 2 + 32     # b ≤ IL + FL + 1 = 9


def test_from_counts_reads_the_registers_of_an_epoch_without_updates():
    counts = np.zeros(50, dtype=np.int64)
    counts[[0, 33]] = [4, 2]
    assert UpdateStats.from_counts(9, 1, np.inf, 0.5, counts) == UpdateStats(9, 1, 0.0, 0.5, {-32: 4, 1: 2})
