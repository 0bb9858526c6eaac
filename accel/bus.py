"""The bus a driver talks to a board through: 32-bit words at byte addresses, bursts, waiting.

    >>> bus = MemoryBus(words=64)
    >>> bus.write_words(0x10, [1, 2, 3])
    >>> bus.read_words(0x10, 3).tolist(), bus.read(0x14)
    ([1, 2, 3], 2)
    >>> bus.wait(0x18, mask=0x2, value=0x2, timeout=0.1)
    3

The RTL model and a real FPGA share one driver; only the :class:`Bus` underneath differs
(``accel.etherbone.EtherboneBus`` for a LiteX-style board over UDP, whether simulated on
loopback or real at its IP address). Bursts address consecutive words (addr, addr + 4, …).

Laws a bus keeps: a write is done when ``write_words`` returns (a later read sees it); reads
and writes are applied in call order; a failure raises :class:`BusError` naming the address,
and never returns made-up data.
"""
from __future__ import annotations

import time
from abc import ABC, abstractmethod
from typing import Sequence

import numpy as np

__all__ = ["Bus", "BusError", "BusTimeout", "MemoryBus", "WORD"]

WORD = 4                     # bytes per bus word; addresses are byte addresses, word-aligned


class BusError(RuntimeError):
    """A transaction failed (unreachable board, malformed reply, address out of range)."""


class BusTimeout(BusError):
    """No answer, or a condition not met, within the time allowed."""


def check_aligned(addr: int, n: int) -> None:
    if addr % WORD or addr < 0:
        raise BusError(f"address 0x{addr:x} is not a non-negative multiple of {WORD}")
    if n < 0:
        raise BusError(f"burst of {n} words")


class Bus(ABC):
    """A 32-bit bus: implement :meth:`read_words` and :meth:`write_words`; the rest derives."""

    @abstractmethod
    def read_words(self, addr: int, n: int) -> np.ndarray:
        """``n`` consecutive words from byte address ``addr``, as uint32."""

    @abstractmethod
    def write_words(self, addr: int, words: Sequence[int] | np.ndarray) -> None:
        """Write consecutive words from byte address ``addr``."""

    def read(self, addr: int) -> int:
        return int(self.read_words(addr, 1)[0])

    def write(self, addr: int, value: int) -> None:
        self.write_words(addr, [value])

    def wait(self, addr: int, *, mask: int, value: int, timeout: float, poll: float = 0.0005) -> int:
        """Read ``addr`` until ``word & mask == value``; return the word, or raise BusTimeout."""
        deadline = time.monotonic() + timeout
        while True:
            word = self.read(addr)
            if word & mask == value:
                return word
            if time.monotonic() > deadline:
                raise BusTimeout(f"0x{addr:08x} reads 0x{word:08x}; waited {timeout:g} s for "
                                 f"bits 0x{mask:x} to become 0x{value:x}")
            time.sleep(poll)

    def close(self) -> None:
        """Release the connection (nothing by default)."""

    def __enter__(self) -> "Bus":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class MemoryBus(Bus):
    """A bus onto plain memory (tests, and the target of a loopback Etherbone endpoint)."""

    def __init__(self, words: int) -> None:
        self.mem = np.zeros(words, dtype=np.uint32)

    def _span(self, addr: int, n: int) -> slice:
        check_aligned(addr, n)
        start = addr // WORD
        if start + n > self.mem.size:
            raise BusError(f"0x{addr:08x} + {n} words is beyond the {self.mem.size}-word memory")
        return slice(start, start + n)

    def read_words(self, addr: int, n: int) -> np.ndarray:
        return self.mem[self._span(addr, n)].copy()

    def write_words(self, addr: int, words: Sequence[int] | np.ndarray) -> None:
        words = np.asarray(words, dtype=np.uint32)
        self.mem[self._span(addr, words.size)] = words
