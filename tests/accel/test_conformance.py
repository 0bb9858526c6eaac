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
import math
import subprocess
import sys

import numpy as np
import pytest

from accel import backends
from accel.backends.net import DenseLayer, step_counts
from accel.daemon import Daemon
from accel.numerics import quantize
from accel.spec.gradstats import BINADE_FLOOR
from accel.spec.layer import RECIPES as LAYER_RECIPES
from host.recipes import RECIPES as NET_RECIPES
from protocol.channel import AcceleratorError, Client
from protocol.codec import ProtocolError, decode, encode
from protocol.formats import parse_format
from protocol.messages import (
    PROTOCOL_VERSION,
    Configure,
    ConfigureNet,
    EpochReport,
    Fetch,
    FetchNet,
    Hello,
    LoadData,
    NetGrad,
    NetGradient,
    Promote,
    Recentre,
    RecentreNet,
    Restore,
    RunEpoch,
    RunNetEpoch,
)

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

    def epoch(e, step=0.3, statistics=None):
        order = rng.integers(0, N, 8 * batch).astype(np.uint32)
        return RunEpoch(algorithm=kernel, epoch=e, steps=8, step_size=step, batch_size=batch, order=order,
                        statistics=statistics)

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
        epoch(1, statistics=True),
        Fetch(),
        Promote(offset_format=wider),
        Promote(offset_format="e4m3fn"),                                # refused: not an offset format
        *recentre(0.05),
        epoch(2),                                                       # no statistics asked for
        epoch(3, step=40.0, statistics=True),                           # saturates
        Fetch(),
    ]


def _wire(reply, seq: int, version: tuple[int, int]) -> tuple[bytes, ...]:
    return tuple(bytes(f) for f in encode(reply, seq=seq, session="conformance", version=version))


def collect(requests: list, ask, version: tuple[int, int] = (1, 1)) -> list:
    """Each reply as its encoded frames, ``"error:<code>"`` for a refusal; hello: the spec version.
    An epoch report's or a net gradient's ``work`` (the backend's own timing or cycle count) is
    left out. Encoded as protocol ``version`` (1.1 for the linear scenarios, 1.5 for networks):
    the pinned digests follow the arithmetic, not the header's version."""
    out = []
    for seq, request in enumerate(requests):
        try:
            reply = ask(request)
        except (ProtocolError, AcceleratorError) as exc:
            out.append(f"error:{exc.code}")
            continue
        if isinstance(reply, (EpochReport, NetGradient)):
            reply = dataclasses.replace(reply, work=None)
        out.append(_wire(reply, seq, version) if request.TYPE != "hello" else reply.spec)
    return out


def replies(backend: str, requests: list, version: tuple[int, int] = (1, 1), **options) -> list:
    """The replies of ``backend`` behind the daemon's state machine, in process."""
    return collect(requests, Daemon(backend, **options).handle, version)


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
# change of kernel spec v2's arithmetic (update docs/accelerator.md and the spec version with it)
# or of the update statistics that epoch reports carry since protocol 1.5.
PINNED: dict[tuple, str] = {
    ('linear', 'halp', 1, 'nearest_even', 'fixed'): 'ab0b33cec3f96cc3',
    ('linear', 'halp', 1, 'nearest_even', 'float'): 'c7df1ae13fd5d227',
    ('linear', 'halp', 1, 'stochastic', 'fixed'): '6ec0338f9ef992fb',
    ('linear', 'halp', 1, 'stochastic', 'float'): 'ded269e3c335532e',
    ('linear', 'halp', 3, 'nearest_even', 'fixed'): '6ee7fd3cdafc9061',
    ('linear', 'halp', 3, 'nearest_even', 'float'): 'a457dbf7c42e9c9f',
    ('linear', 'halp', 3, 'stochastic', 'fixed'): '83a6f77dfaf045a1',
    ('linear', 'halp', 3, 'stochastic', 'float'): '7a9fc21199c05856',
    ('linear', 'lpsvrg', 1, 'nearest_even', 'fixed'): '40eaff94c347229b',
    ('linear', 'lpsvrg', 1, 'nearest_even', 'float'): '952e4e681951dd34',
    ('linear', 'lpsvrg', 1, 'stochastic', 'fixed'): '5070181587610b1d',
    ('linear', 'lpsvrg', 1, 'stochastic', 'float'): '81145f6e107592b6',
    ('linear', 'lpsvrg', 3, 'nearest_even', 'fixed'): '9845b4d17656d414',
    ('linear', 'lpsvrg', 3, 'nearest_even', 'float'): '55d81fdc9e4609e8',
    ('linear', 'lpsvrg', 3, 'stochastic', 'fixed'): 'eb47263e5dd642db',
    ('linear', 'lpsvrg', 3, 'stochastic', 'float'): 'aa404f39d60bc475',
    ('linear', 'lpsgd', 1, 'nearest_even', 'fixed'): '1f3db2b3552da1fc',
    ('linear', 'lpsgd', 1, 'nearest_even', 'float'): '078f63db68e25754',
    ('linear', 'lpsgd', 1, 'stochastic', 'fixed'): '4ce4d9ecec54cb4b',
    ('linear', 'lpsgd', 1, 'stochastic', 'float'): 'a3cf148a006f1a1e',
    ('linear', 'lpsgd', 3, 'nearest_even', 'fixed'): '3582aa3addc602cb',
    ('linear', 'lpsgd', 3, 'nearest_even', 'float'): 'b906c8da8e91a189',
    ('linear', 'lpsgd', 3, 'stochastic', 'fixed'): '14691062992a4983',
    ('linear', 'lpsgd', 3, 'stochastic', 'float'): 'b18be978321ae1a0',
    ('logistic', 'halp', 1, 'nearest_even', 'fixed'): '16b46b5f2c4c2a02',
    ('logistic', 'halp', 1, 'nearest_even', 'float'): '42050051ccf02383',
    ('logistic', 'halp', 1, 'stochastic', 'fixed'): '040935dc68962652',
    ('logistic', 'halp', 1, 'stochastic', 'float'): '2acf7215f4db0169',
    ('logistic', 'halp', 3, 'nearest_even', 'fixed'): '4803d6a75dddf4d6',
    ('logistic', 'halp', 3, 'nearest_even', 'float'): 'b0f4b4c3d8193f37',
    ('logistic', 'halp', 3, 'stochastic', 'fixed'): 'd1778023903455a9',
    ('logistic', 'halp', 3, 'stochastic', 'float'): 'a3b1153e0e4eee56',
    ('logistic', 'lpsvrg', 1, 'nearest_even', 'fixed'): '04785884c551bc59',
    ('logistic', 'lpsvrg', 1, 'nearest_even', 'float'): 'b2f301222e59ed29',
    ('logistic', 'lpsvrg', 1, 'stochastic', 'fixed'): '84fad5afd5ab298c',
    ('logistic', 'lpsvrg', 1, 'stochastic', 'float'): '0698f5af3ca3c01c',
    ('logistic', 'lpsvrg', 3, 'nearest_even', 'fixed'): '9c819eb446248992',
    ('logistic', 'lpsvrg', 3, 'nearest_even', 'float'): '9938528604010fbc',
    ('logistic', 'lpsvrg', 3, 'stochastic', 'fixed'): 'f7e2f6bd0d15dca8',
    ('logistic', 'lpsvrg', 3, 'stochastic', 'float'): 'bea65a105188cf3b',
    ('logistic', 'lpsgd', 1, 'nearest_even', 'fixed'): 'dcc7c3ef68db3a15',
    ('logistic', 'lpsgd', 1, 'nearest_even', 'float'): '50777deb054a3bd8',
    ('logistic', 'lpsgd', 1, 'stochastic', 'fixed'): 'ea1de0d0ad1c0d4a',
    ('logistic', 'lpsgd', 1, 'stochastic', 'float'): '0c0003d7aa38b22d',
    ('logistic', 'lpsgd', 3, 'nearest_even', 'fixed'): 'a7fc787658af96a0',
    ('logistic', 'lpsgd', 3, 'nearest_even', 'float'): 'c1ffb0b1de3dea7f',
    ('logistic', 'lpsgd', 3, 'stochastic', 'fixed'): '8cdff9ce9a5987f4',
    ('logistic', 'lpsgd', 3, 'stochastic', 'float'): '866bfb10665dddaf',
    ('softmax', 'halp', 1, 'nearest_even', 'fixed'): '5291b0768c02e78e',
    ('softmax', 'halp', 1, 'nearest_even', 'float'): '157c498ea19de158',
    ('softmax', 'halp', 1, 'stochastic', 'fixed'): '2ee0b3766aa64bf0',
    ('softmax', 'halp', 1, 'stochastic', 'float'): '9fbbc10116707b06',
    ('softmax', 'halp', 3, 'nearest_even', 'fixed'): '116d1cf8d70adb5b',
    ('softmax', 'halp', 3, 'nearest_even', 'float'): '4f6a64d64e1cd362',
    ('softmax', 'halp', 3, 'stochastic', 'fixed'): '27d4d5daebbaf4f0',
    ('softmax', 'halp', 3, 'stochastic', 'float'): '1b95a844aa200511',
    ('softmax', 'lpsvrg', 1, 'nearest_even', 'fixed'): '1cc911e5b54d5b59',
    ('softmax', 'lpsvrg', 1, 'nearest_even', 'float'): 'a54df133d10a57e6',
    ('softmax', 'lpsvrg', 1, 'stochastic', 'fixed'): '45df88a7c2a5ff94',
    ('softmax', 'lpsvrg', 1, 'stochastic', 'float'): 'ae007b98ec1aebb4',
    ('softmax', 'lpsvrg', 3, 'nearest_even', 'fixed'): '539c681ce205c4d1',
    ('softmax', 'lpsvrg', 3, 'nearest_even', 'float'): 'f6f86a7e94ad5dbb',
    ('softmax', 'lpsvrg', 3, 'stochastic', 'fixed'): 'fb8b5527bd3f116e',
    ('softmax', 'lpsvrg', 3, 'stochastic', 'float'): 'cc837d51a9a2aa6e',
    ('softmax', 'lpsgd', 1, 'nearest_even', 'fixed'): '8c88130f0311d432',
    ('softmax', 'lpsgd', 1, 'nearest_even', 'float'): 'af76e5ca03aeb96c',
    ('softmax', 'lpsgd', 1, 'stochastic', 'fixed'): 'b538df3f62ce3fa0',
    ('softmax', 'lpsgd', 1, 'stochastic', 'float'): '38594e77e24fb28d',
    ('softmax', 'lpsgd', 3, 'nearest_even', 'fixed'): '10d840b712528727',
    ('softmax', 'lpsgd', 3, 'nearest_even', 'float'): '9c1c3462cc2f71fc',
    ('softmax', 'lpsgd', 3, 'stochastic', 'fixed'): '79e51958064c5c7f',
    ('softmax', 'lpsgd', 3, 'stochastic', 'float'): '252692fb34583f4e',
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


def test_the_epoch_reports_carry_consistent_update_statistics(reference):
    """The epochs that asked for statistics have them, the other not; they add up, their
    extremes fall in the lowest and highest binades counted, and updates vanish in some
    scenarios. The tests above hold them equal on every backend (they are part of the bytes)."""
    vanished = 0
    for case, rs in reference.items():
        c = 3 if case[0] == "softmax" else 1
        _, offset, wider, _ = FORMATS[case[4]]
        reports = [m for m in (decode(list(r))[1] for r in rs if isinstance(r, tuple)) if isinstance(m, EpochReport)]
        assert [m.epoch for m in reports] == [1, 2, 3] and reports[1].updates is None
        for m in (reports[0], reports[2]):
            fl = parse_format(offset if m.epoch == 1 else wider).frac_bits
            binades = {int(b): n for b, n in m.update_binades.items()}
            assert m.updates == 8 * F * c and m.vanished <= sum(binades.values()) <= m.updates, case
            assert 0 < m.update_min <= m.update_max, case
            assert min(binades) == max(math.floor(math.log2(m.update_min)) + fl, BINADE_FLOOR), case
            assert max(binades) == math.floor(math.log2(m.update_max)) + fl, case
            vanished += m.vanished
    assert vanished > 0


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


# ---- restore: a new accelerator carries on from a fetched state --------------------------------

def restored_scenario(case: tuple, state) -> list:
    """A second session that restores ``state`` (the scenario's first fetch) and sends the rest of
    the scenario after it, at the same sequence numbers; refused restores fill the gap."""
    requests = scenario(*case)
    at = next(i for i, r in enumerate(requests) if isinstance(r, Fetch))
    restore = Restore(offset=state.offset, offset_format=state.offset_format, scale=state.scale,
                      counters=state.counters)
    prefix = [requests[0], requests[2],
              restore,                                                          # refused: no data yet
              *requests[4:6],
              dataclasses.replace(restore, offset=state.offset[:-1]),           # refused: shape
              dataclasses.replace(restore, offset=state.offset + 2.0 ** -20),   # refused: off the grid
              restore]
    assert len(prefix) <= at + 1
    return prefix + [Fetch()] * (at + 1 - len(prefix)) + requests[at + 1:]


@pytest.fixture(scope="module")
def restored(reference):
    """Per case: (the scenario's tail after its first fetch, restored_scenario's requests)."""
    out = {}
    for case, rs in reference.items():
        at = next(i for i, r in enumerate(scenario(*case)) if isinstance(r, Fetch))
        out[case] = (rs[at + 1:], restored_scenario(case, decode(list(rs[at]))[1]))
    return out


@pytest.mark.parametrize("backend", backends.names())
def test_every_backend_restores_like_the_reference(backend, restored):
    for case in [case for case in CASES if covered(backend, case)]:
        _, requests = restored[case]
        assert (replies(backend, requests, **OPTIONS[backend])
                == replies(REFERENCE, requests)), f"{backend} restores unlike {REFERENCE} on {case}"


@pytest.mark.slow
def test_the_simulated_core_restores_like_the_reference(board, restored):
    """Restore on the RTL core under Verilator: q through its offset window, then the same epochs."""
    for case in [case for case in CASES if covered("rtl", case)]:
        _, requests = restored[case]
        assert replies("rtl", requests, fpga=board) == replies(REFERENCE, requests), f"the core differs on {case}"


def test_after_a_restore_the_epochs_compute_the_same_bytes(restored):
    """Law 5: the restored session's epochs, fetches and recentres answer exactly as the
    original's did after that fetch (a promote's ack may differ in ops only: a restored daemon
    holds no anchor terms to re-round until the next recentre)."""
    for case, (tail, requests) in restored.items():
        rs = replies(REFERENCE, requests)
        assert rs[2] == "error:bad_state"
        assert rs[5:7] == ["error:bad_shape", "error:bad_value"]
        assert decode(list(rs[7]))[1].info["scale"] == requests[7].scale   # stored as fetched
        for request, original, again in zip(requests[-len(tail):], tail, rs[-len(tail):]):
            if request.TYPE == "promote" and isinstance(original, tuple):
                assert decode(list(again))[1].info["saturations"] == decode(list(original))[1].info["saturations"]
            else:
                assert again == original, f"{case}: {request.TYPE} differs after the restore"


# ---- networks (protocol 1.5): the layer kernel behind configure_net ------------------------------

NET_LAYERS = [[70, 6, "relu"], [6, 3, "none"]]    # the first fan-in, 71 with the bias, spans two chunks of 64
NET_PARAMS = 71 * 6 + 7 * 3
NET_VERSION = (1, 5)


def fp8_configure(layers: list, w: np.ndarray, *, seed: int) -> ConfigureNet:
    """configure_net of ``layers`` on N samples with the fp8-ibm recipe, 4 lanes, λ = 0.05."""
    r = NET_RECIPES["fp8-ibm"]
    return ConfigureNet(layers=layers, n_samples=N, weights_format=r["weights"],
                        activations_format=r["activations"], errors_format=r["errors"],
                        weight_grads_format=r["weight_grads"], acc_format=r["acc"], chunk=r["chunk"],
                        update_format=r["update"], rounding=r["rounding"], rbits=0, lanes=4, seed=seed,
                        l2=0.05, weights=w)


def net_scenario() -> list:
    """One network session with the fp8-ibm recipe: a refused and a good configure_net, a
    gradient before the data, a chunked load (part of it saturates), gradients of 1 and 4
    samples, a refused gradient, two LP-SGD epochs (with decay), each followed by requests."""
    rng = np.random.default_rng(2)
    w = rng.standard_normal(NET_PARAMS) * 0.2
    x, y = rng.uniform(0.0, 1.0, (N, 70)), rng.integers(0, 3, N).astype(float)
    configure = fp8_configure(NET_LAYERS, w, seed=7)

    def grad(batch: int, weights=w) -> NetGrad:
        return NetGrad(weights=weights, batch=rng.integers(0, N, batch).astype(np.uint32))

    def epoch(e: int, steps: int, batch: int) -> RunNetEpoch:
        return RunNetEpoch(epoch=e, steps=steps, step_size=0.25, batch_size=batch,
                           order=rng.integers(0, N, steps * batch).astype(np.uint32))

    return [
        Hello(client="conformance"),
        dataclasses.replace(configure, layers=[[70, 6, "none"], [6, 3, "none"]]),   # refused: hidden layer
        configure,
        grad(3),                                                        # refused: no data yet
        LoadData(start=0, x=x[:7], y=y[:7]),
        LoadData(start=7, x=x[7:] * 1e6, y=y[7:]),                      # saturates
        grad(1),
        grad(4, w * 0.5),
        grad(2, w[:-1]),                                                # refused: shape
        epoch(1, 6, 3),
        FetchNet(),
        epoch(2, 5, 1),
        grad(2),
        FetchNet(),
    ]


NET_PINNED = "dec597f81b038ae8"   # sha256 (first 16 hex digits) of the reference replies, as PINNED


def announces_networks(backend: str) -> bool:
    return "max_net_params" in backends.capabilities(backend).limits


@pytest.fixture(scope="module")
def net_reference():
    return replies(REFERENCE, net_scenario(), NET_VERSION)


@pytest.mark.parametrize("backend", backends.names())
def test_every_backend_runs_networks_like_the_reference_or_refuses_them(backend, net_reference):
    """A backend that announces networks (max_net_params) answers the network session byte for
    byte like the reference; one that does not refuses configure_net with a message saying so,
    and everything after it as unconfigured."""
    assert announces_networks(REFERENCE)
    got = replies(backend, net_scenario(), NET_VERSION, **OPTIONS[backend])
    if announces_networks(backend):
        assert got == net_reference, f"{backend} differs from {REFERENCE} on the network session"
        return
    configure = net_scenario()[2]
    with pytest.raises(ProtocolError, match=f"the {backend} backend does not run networks"):
        Daemon(backend, **OPTIONS[backend]).handle(configure)
    assert got[0] == net_reference[0] and got[1:3] == ["error:bad_value"] * 2
    assert all(r.startswith("error:") for r in got[3:])


def test_the_network_scenario_exercises_its_requests(net_reference):
    rs = [decode(list(r))[1] if isinstance(r, tuple) else r for r in net_reference]
    assert rs[0] == [2, 0]
    assert [i for i, r in enumerate(rs) if isinstance(r, str) and r.startswith("error:")] == [1, 3, 8]
    assert (rs[1], rs[3], rs[8]) == ("error:bad_value", "error:bad_state", "error:bad_shape")
    assert rs[2].info["n_params"] == NET_PARAMS
    assert rs[4].info["saturations"] == 0 and rs[5].info["saturations"] > 0
    g1 = rs[6]
    ops, memory = step_counts([DenseLayer(*lay) for lay in NET_LAYERS], LAYER_RECIPES["fp8-ibm"], 1,
                              update=False, decay=False)
    assert {k: v for k, v in g1.ops.items() if not k.startswith("swamped")} == dict(ops)
    assert g1.memory == dict(memory) and g1.loss is not None
    # The swamped adds are measured, and pinned with the bytes: a few in every request here.
    assert all(rs[i].ops["swamped add fp16_ibm"] > 0 for i in (6, 7, 9, 11, 12))
    assert not np.array_equal(rs[6].grad, rs[7].grad)
    e1, e2 = rs[9], rs[11]
    assert (e1.epoch, e1.steps, e2.epoch, e2.steps) == (1, 6, 2, 5)
    w0 = net_scenario()[2].weights
    first, second = rs[10].weights, rs[13].weights
    assert rs[10].update_format == "fp16_ibm"
    assert not np.array_equal(first, second) and not np.array_equal(quantize(w0, "fp16_ibm"), first)
    assert np.array_equal(quantize(second, "fp16_ibm"), second)


def test_network_replies_are_pinned(net_reference):
    assert digest(net_reference) == NET_PINNED


# ---- networks since protocol 1.6: convolutions and mixed's local steps ----------------------------

CONV_LAYERS = [["conv3", 2, 3, 4, 4, "relu", 2], [12, 3, "none"]]   # 2×4×4 images → 3×2×2 → 3 classes
CONV_PARAMS = (9 * 2 + 1) * 3 + 13 * 3


def conv_scenario() -> list:
    """One session on a convolutional network (fp8-ibm): configure_net with a conv3 entry (and
    one whose chain breaks), the data, a gradient, two rounds of local steps (3 and 2 steps; one
    refused: its batch is not a multiple of its steps), an LP-SGD epoch, a HALP epoch."""
    rng = np.random.default_rng(3)
    w = rng.standard_normal(CONV_PARAMS) * 0.3
    x, y = rng.uniform(0.0, 1.0, (N, 32)), rng.integers(0, 3, N).astype(float)
    configure = fp8_configure(CONV_LAYERS, w, seed=5)

    def batch(n: int) -> np.ndarray:
        return rng.integers(0, N, n).astype(np.uint32)

    def local(steps: int, n: int, first: int) -> NetGrad:
        return NetGrad(weights=w, batch=batch(n), steps=steps, step_size=0.25, epoch=1, first_step=first)

    return [
        Hello(client="conformance"),
        dataclasses.replace(configure, layers=[CONV_LAYERS[0], [8, 3, "none"]]),    # refused: 12 ≠ 8
        configure,
        LoadData(start=0, x=x, y=y),
        NetGrad(weights=w, batch=batch(2)),
        local(3, 6, 0),
        local(2, 4, 3),
        local(2, 5, 5),                                                 # refused: 5 is not 2 × B
        RunNetEpoch(epoch=1, steps=4, step_size=0.25, batch_size=2, order=batch(8)),
        FetchNet(),
        RecentreNet(anchor=w, full_grad=rng.standard_normal(CONV_PARAMS) * 0.1, scale=0.01,
                    offset_format="fixed<1,7>"),
        RunNetEpoch(epoch=2, steps=3, step_size=0.25, batch_size=2, order=batch(6), algorithm="halp"),
        FetchNet(),
    ]


CONV_PINNED = "995299ccecc1be12"   # sha256 (first 16 hex digits) of the reference replies, as PINNED


@pytest.fixture(scope="module")
def conv_reference():
    return replies(REFERENCE, conv_scenario(), PROTOCOL_VERSION)


@pytest.mark.parametrize("backend", backends.names())
def test_every_backend_runs_convolutions_and_local_steps_like_the_reference_or_refuses(backend, conv_reference):
    got = replies(backend, conv_scenario(), PROTOCOL_VERSION, **OPTIONS[backend])
    if announces_networks(backend):
        assert got == conv_reference, f"{backend} differs from {REFERENCE} on the convolutional session"
    else:
        assert all(r.startswith("error:") for r in got[1:])


def test_the_convolutional_scenario_exercises_its_requests(conv_reference):
    rs = [decode(list(r))[1] if isinstance(r, tuple) else r for r in conv_reference]
    assert [i for i, r in enumerate(rs) if isinstance(r, str) and r.startswith("error:")] == [1, 7]
    assert rs[1] == rs[7] == "error:bad_value"
    assert rs[2].info["n_params"] == CONV_PARAMS
    plain, three, two = rs[4], rs[5], rs[6]
    # a round of k local steps: k gradients' products, and k − 1 updates of the local copy
    # (the last one's would be thrown away), each rounding every parameter stochastically
    assert three.ops["mul fp8_ibm*fp8_ibm"] == 3 * plain.ops["mul fp8_ibm*fp8_ibm"]
    assert "round fp16_ibm stochastic" not in plain.ops
    assert three.ops["round fp16_ibm stochastic"] == 2 * CONV_PARAMS
    assert two.ops["round fp16_ibm stochastic"] == CONV_PARAMS
    assert not np.array_equal(three.grad, two.grad)
    assert rs[8].steps == 4 and rs[11].steps == 3
    # HALP steps the offset and leaves the master weights as the LP-SGD epoch left them
    assert np.array_equal(rs[9].weights, rs[12].weights) and rs[9].offset is None
    assert rs[12].offset_format == "fixed<1,7>" and np.any(rs[12].offset != 0)


def test_convolutional_replies_are_pinned(conv_reference):
    assert digest(conv_reference) == CONV_PINNED
