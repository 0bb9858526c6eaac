"""Conformance suite of kernel spec v2: every registered backend, the same requests, the same bytes.

Each scenario is one session of protocol requests (configure, chunked load, refusals, recentre,
epochs, a promote, a saturating epoch, fetches) run through the real daemon logic in front of a
backend. Every reply is encoded as it would travel; a backend conforms when its replies equal
the reference backend's byte for byte (error replies: the same code at the same request). The
reference's own replies are pinned by a digest per scenario, so a change of the spec's
arithmetic cannot pass unnoticed. A new backend is covered by adding it to the registry.
"""
from __future__ import annotations

import dataclasses
import hashlib
import subprocess
import sys

import numpy as np
import pytest

from accel import backends
from accel.daemon import Daemon
from protocol.channel import AcceleratorError, Client
from protocol.codec import ProtocolError, decode, encode
from protocol.messages import Configure, EpochReport, Fetch, Hello, LoadData, Promote, Recentre, RunEpoch

REFERENCE = "emulated"
N, F = 12, 5
FORMATS = {"fixed": ("fixed<2,6>", "fixed<1,7>", "fixed<2,10>", "fp32"),
           "float": ("e4m3fn", "fixed<2,6>", "fixed<3,9>", "bf16")}


def _problem(problem: str, seed: int = 0):
    rng = np.random.default_rng(seed)
    c = 3 if problem == "softmax" else 1
    x = rng.uniform(-1.5, 1.5, (N, F))
    w = rng.standard_normal((F, c))
    a = x @ w
    if problem == "linear":
        return c, x, rng.standard_normal(N), None
    if problem == "logistic":
        return c, x, rng.integers(0, 2, N).astype(float), 1 / (1 + np.exp(-a))
    e = np.exp(a - a.max(axis=1, keepdims=True))
    return c, x, rng.integers(0, c, N).astype(float), e / e.sum(axis=1, keepdims=True)


def scenario(problem: str, algorithm: str, batch: int, rounding: str, family: str) -> list:
    """The requests of one session (see the module docstring)."""
    data, offset, wider, acc = FORMATS[family]
    c, x, y, anchor = _problem(problem)
    kernel = "sgd" if algorithm == "lpsgd" else "svrg"
    rng = np.random.default_rng(1)
    g = rng.standard_normal((F, c)) * 0.1

    def recentre(scale_factor):
        scale = float(np.linalg.norm(g)) * scale_factor if algorithm == "halp" else None
        return [Recentre(full_grad=g, anchor=anchor, scale=scale)] if algorithm != "lpsgd" else []

    def epoch(e, step=0.3):
        order = rng.integers(0, N, 8 * batch).astype(np.uint32)
        return RunEpoch(algorithm=kernel, epoch=e, steps=8, step_size=step, batch_size=batch, order=order)

    return [
        Hello(client="conformance"),
        Configure(problem=problem, n_samples=N, n_features=F, n_outputs=c, data_format=data,
                  offset_format=offset, acc_format="fixed<8,8>", rounding=rounding, rbits=0, lanes=4,
                  seed=7, l2=0.05, scale=0.5),                          # refused: acc must be float
        Configure(problem=problem, n_samples=N, n_features=F, n_outputs=c, data_format=data,
                  offset_format=offset, acc_format=acc, rounding=rounding, rbits=0, lanes=4, seed=7,
                  l2=0.05, scale=0.5),
        epoch(0),                                                       # refused: no data yet
        LoadData(start=0, x=x[:7], y=y[:7]),
        LoadData(start=7, x=x[7:] * 1000, y=y[7:]),                     # some data saturates
        *recentre(0.3),
        epoch(1),
        Fetch(),
        Promote(offset_format=wider),
        Promote(offset_format="e4m3fn"),                                # refused: not an offset format
        *recentre(0.05),
        epoch(2),
        epoch(3, step=40.0),                                            # saturates
        Fetch(),
    ]


def _wire(reply, seq: int) -> tuple[bytes, ...]:
    # Encoded as protocol 1.1: the pinned digests follow the arithmetic, not the header's version.
    return tuple(bytes(f) for f in encode(reply, seq=seq, session="conformance", version=(1, 1)))


def collect(requests: list, ask) -> list:
    """Each reply as its encoded frames, ``"error:<code>"`` for a refusal; hello: the spec version.
    An epoch report's ``work`` (the backend's own timing or cycle count) is left out."""
    out = []
    for seq, request in enumerate(requests):
        try:
            reply = ask(request)
        except (ProtocolError, AcceleratorError) as exc:
            out.append(f"error:{exc.code}")
            continue
        if isinstance(reply, EpochReport):
            reply = dataclasses.replace(reply, work=None)
        out.append(_wire(reply, seq) if request.TYPE != "hello" else reply.spec)
    return out


def replies(backend: str, requests: list, **options) -> list:
    """The replies of ``backend`` behind the daemon's state machine, in process."""
    return collect(requests, Daemon(backend, **options).handle)


def covered(backend: str, case: tuple) -> bool:
    """Whether ``backend``'s capabilities announce the formats of ``case`` (the suite's scope)."""
    caps = backends.capabilities(backend)
    data, offset, wider, acc = FORMATS[case[4]]
    try:
        caps.check_run(data=data, offset=offset, acc=acc, rounding=case[3], n_features=F)
        caps.check_format("offset", wider)
    except Exception:
        return False
    return True


# Constructor options per backend: here the rtl backend's driver runs on the register-level model;
# test_the_simulated_core_answers_like_the_reference runs it on the Verilator-simulated core.
OPTIONS = {"emulated": {}, "rtl": {"fpga": "model"}}


def digest(rs: list) -> str:
    h = hashlib.sha256()
    for r in rs:
        for part in (r if isinstance(r, tuple) else (repr(r).encode(),)):
            h.update(part)
    return h.hexdigest()[:16]


CASES = [(p, a, b, r, f) for p in ("linear", "logistic", "softmax") for a in ("halp", "lpsvrg", "lpsgd")
         for b in (1, 3) for r in ("nearest_even", "stochastic") for f in ("fixed", "float")]

# sha256 (first 16 hex digits) of the reference backend's replies per scenario. A change here is a
# change of kernel spec v2's arithmetic: update docs/accelerator.md and the spec version with it.
PINNED: dict[tuple, str] = {
    ('linear', 'halp', 1, 'nearest_even', 'fixed'): '810ad73a42736444',
    ('linear', 'halp', 1, 'nearest_even', 'float'): '43c3fcffdb5bc731',
    ('linear', 'halp', 1, 'stochastic', 'fixed'): '6032ab96a384e9ed',
    ('linear', 'halp', 1, 'stochastic', 'float'): 'b0d986c9c9845a15',
    ('linear', 'halp', 3, 'nearest_even', 'fixed'): '56b2cfd0d8b367f4',
    ('linear', 'halp', 3, 'nearest_even', 'float'): '8092e9c6bbfce7be',
    ('linear', 'halp', 3, 'stochastic', 'fixed'): '005bad907bc9124e',
    ('linear', 'halp', 3, 'stochastic', 'float'): 'c128b8337b46ede7',
    ('linear', 'lpsvrg', 1, 'nearest_even', 'fixed'): '9894a7badef8f281',
    ('linear', 'lpsvrg', 1, 'nearest_even', 'float'): '1e13bd32010108e9',
    ('linear', 'lpsvrg', 1, 'stochastic', 'fixed'): '6555f081efcb611a',
    ('linear', 'lpsvrg', 1, 'stochastic', 'float'): '44d07f78f178df08',
    ('linear', 'lpsvrg', 3, 'nearest_even', 'fixed'): 'fdc135ec6add9130',
    ('linear', 'lpsvrg', 3, 'nearest_even', 'float'): '93bac79c7ec14980',
    ('linear', 'lpsvrg', 3, 'stochastic', 'fixed'): '9fe8290f5fe7ac67',
    ('linear', 'lpsvrg', 3, 'stochastic', 'float'): '425c32ad9385ed79',
    ('linear', 'lpsgd', 1, 'nearest_even', 'fixed'): '9554323fd311c78f',
    ('linear', 'lpsgd', 1, 'nearest_even', 'float'): 'b289c3c1102e4c2c',
    ('linear', 'lpsgd', 1, 'stochastic', 'fixed'): '07f881a59f9c3945',
    ('linear', 'lpsgd', 1, 'stochastic', 'float'): '801ab2726a0e830d',
    ('linear', 'lpsgd', 3, 'nearest_even', 'fixed'): '8d2ec0aa7cdad6c7',
    ('linear', 'lpsgd', 3, 'nearest_even', 'float'): '847399e41fd2c558',
    ('linear', 'lpsgd', 3, 'stochastic', 'fixed'): '3beb2aa7ba4bc02c',
    ('linear', 'lpsgd', 3, 'stochastic', 'float'): '1ea0dc500e4a699d',
    ('logistic', 'halp', 1, 'nearest_even', 'fixed'): 'b75277027a9b540f',
    ('logistic', 'halp', 1, 'nearest_even', 'float'): '0e32be33e6cdd4af',
    ('logistic', 'halp', 1, 'stochastic', 'fixed'): 'bad0ea3e85ed5044',
    ('logistic', 'halp', 1, 'stochastic', 'float'): '97c4a5d4e9879fd5',
    ('logistic', 'halp', 3, 'nearest_even', 'fixed'): '3e08565a69af6b63',
    ('logistic', 'halp', 3, 'nearest_even', 'float'): '8ea2b73e5709bf75',
    ('logistic', 'halp', 3, 'stochastic', 'fixed'): '6ae6d8949b80b8a3',
    ('logistic', 'halp', 3, 'stochastic', 'float'): '8dca81bfca88962d',
    ('logistic', 'lpsvrg', 1, 'nearest_even', 'fixed'): '1045d16a586e33d2',
    ('logistic', 'lpsvrg', 1, 'nearest_even', 'float'): '0d1f3632b7be63bd',
    ('logistic', 'lpsvrg', 1, 'stochastic', 'fixed'): '14deb492ce5a6c2c',
    ('logistic', 'lpsvrg', 1, 'stochastic', 'float'): 'e3c98cfda14536ad',
    ('logistic', 'lpsvrg', 3, 'nearest_even', 'fixed'): '83f1dc736484b234',
    ('logistic', 'lpsvrg', 3, 'nearest_even', 'float'): '857f79e59eecdec5',
    ('logistic', 'lpsvrg', 3, 'stochastic', 'fixed'): '3f312dc7c70d05e1',
    ('logistic', 'lpsvrg', 3, 'stochastic', 'float'): '3168df58ec36fc3f',
    ('logistic', 'lpsgd', 1, 'nearest_even', 'fixed'): '241fd8d7f0000c20',
    ('logistic', 'lpsgd', 1, 'nearest_even', 'float'): '6e089c04ff2a0cd1',
    ('logistic', 'lpsgd', 1, 'stochastic', 'fixed'): '33b6e9ab7431b415',
    ('logistic', 'lpsgd', 1, 'stochastic', 'float'): '769402d63a6624c1',
    ('logistic', 'lpsgd', 3, 'nearest_even', 'fixed'): '8db0e59d9c29fbd4',
    ('logistic', 'lpsgd', 3, 'nearest_even', 'float'): '5d5ca77253d82b79',
    ('logistic', 'lpsgd', 3, 'stochastic', 'fixed'): 'ffa25a7f4f70ae8e',
    ('logistic', 'lpsgd', 3, 'stochastic', 'float'): 'fe2bb1e63a37afb3',
    ('softmax', 'halp', 1, 'nearest_even', 'fixed'): 'd5b8a14be77b8a4a',
    ('softmax', 'halp', 1, 'nearest_even', 'float'): 'cbf3b75847c509f0',
    ('softmax', 'halp', 1, 'stochastic', 'fixed'): '2123b9322f9cdde9',
    ('softmax', 'halp', 1, 'stochastic', 'float'): '27dd1860e152e7d7',
    ('softmax', 'halp', 3, 'nearest_even', 'fixed'): '1aa2ec2b2da112c0',
    ('softmax', 'halp', 3, 'nearest_even', 'float'): '37e1b0ff53dd6cc0',
    ('softmax', 'halp', 3, 'stochastic', 'fixed'): '7ff707f1ec8830c0',
    ('softmax', 'halp', 3, 'stochastic', 'float'): 'bc48debdb662bc38',
    ('softmax', 'lpsvrg', 1, 'nearest_even', 'fixed'): 'c43a3d2babd5a66b',
    ('softmax', 'lpsvrg', 1, 'nearest_even', 'float'): 'bfe3fcf356dc92b3',
    ('softmax', 'lpsvrg', 1, 'stochastic', 'fixed'): '15d6daef39845232',
    ('softmax', 'lpsvrg', 1, 'stochastic', 'float'): '2597a903e9363b81',
    ('softmax', 'lpsvrg', 3, 'nearest_even', 'fixed'): '538d50ae75895d16',
    ('softmax', 'lpsvrg', 3, 'nearest_even', 'float'): 'd5617b5d55142f44',
    ('softmax', 'lpsvrg', 3, 'stochastic', 'fixed'): 'ec15bc3e41a31cba',
    ('softmax', 'lpsvrg', 3, 'stochastic', 'float'): '4509d68d449be67f',
    ('softmax', 'lpsgd', 1, 'nearest_even', 'fixed'): '7bc1ca4802f72f35',
    ('softmax', 'lpsgd', 1, 'nearest_even', 'float'): '8172f4a241b2dc8a',
    ('softmax', 'lpsgd', 1, 'stochastic', 'fixed'): 'b47d11a62abde62a',
    ('softmax', 'lpsgd', 1, 'stochastic', 'float'): 'e5f2be8194f004d9',
    ('softmax', 'lpsgd', 3, 'nearest_even', 'fixed'): '318bcd672899a1e7',
    ('softmax', 'lpsgd', 3, 'nearest_even', 'float'): '28527cc2b26de56e',
    ('softmax', 'lpsgd', 3, 'stochastic', 'fixed'): '49e70ca9a46f3582',
    ('softmax', 'lpsgd', 3, 'stochastic', 'float'): '0ab23e2224878de8',
}


@pytest.fixture(scope="module")
def reference():
    return {case: replies(REFERENCE, scenario(*case)) for case in CASES}


@pytest.mark.parametrize("backend", backends.names())
def test_every_backend_answers_like_the_reference(backend, reference):
    cases = [case for case in CASES if covered(backend, case)]
    assert len(cases) >= len(CASES) // 2
    for case in cases:
        got = replies(backend, scenario(*case), **OPTIONS[backend])
        assert got == reference[case], f"{backend} differs from {REFERENCE} on {case}"


@pytest.mark.slow
def test_the_simulated_core_answers_like_the_reference(board, reference):
    """The suite unchanged on the RTL core under Verilator, reached over Etherbone by the rtl
    backend's driver: every case its capabilities cover, byte for byte."""
    cases = [case for case in CASES if covered("rtl", case)]
    for case in cases:
        assert replies("rtl", scenario(*case), fpga=board) == reference[case], f"the core differs on {case}"


def test_the_scenarios_exercise_the_state_machine_and_saturation(reference):
    for case, rs in reference.items():
        algorithm = case[1]
        assert rs[0] == [2, 0]                                   # the kernel spec both sides speak
        assert rs[1] == "error:bad_value" and rs[3] == "error:bad_state"
        assert rs.count("error:bad_value") == 2                  # the fixed<8,8> acc and the e4m3fn offset
        load = decode(list(rs[5]))[1]
        assert load.info["saturations"] > 0 and load.info["rows"] == N
        last = decode(list(rs[-2]))[1] if isinstance(rs[-2], tuple) else None
        assert last is not None and last.saturations > 0, f"{case}: the large step did not saturate"
        state = decode(list(rs[-1]))[1]
        assert np.any(state.offset != 0)
        assert state.counters["epochs"] == 3 and state.counters["promotes"] == 1
        assert state.counters["recentres"] == (0 if algorithm == "lpsgd" else 2)


def test_reference_replies_are_pinned(reference):
    got = {case: digest(rs) for case, rs in reference.items()}
    assert got == PINNED


def test_a_daemon_process_sends_the_same_bytes(tmp_path, reference):
    """The wire adds nothing: replies over a real socket re-encode to the in-process bytes."""
    case = ("softmax", "halp", 3, "stochastic", "float")
    address = f"ipc://{tmp_path}/a.sock"
    proc = subprocess.Popen([sys.executable, "-m", "accel", "--bind", address], stderr=subprocess.PIPE)
    try:
        assert b"serving" in proc.stderr.readline()
        with Client(address, timeout=30) as client:
            got = collect(scenario(*case), client.request)
        assert got == reference[case]
    finally:
        proc.terminate()
        proc.wait(10)
