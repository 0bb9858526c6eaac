"""TrainConfig validation, rule-based defaults, and host-only training (no daemon needed)."""
from types import SimpleNamespace

import numpy as np
import pytest

from host.datasets import load_dataset
from host.train import TrainConfig, default_data_format, still_to_run, train
from protocol.formats import FixedFormat


@pytest.mark.parametrize("change,match", [
    ({"dataset": "mnist"}, "digits, digits64, breast_cancer"),
    ({"model": "probit"}, "linear, logistic, softmax"),
    ({"model": "linear"}, "use softmax"),
    ({"algorithms": ("halp", "adam")}, "sgd, svrg, lpsgd, lpsvrg, halp"),
    ({"algorithms": ()}, "non-empty"),
    ({"algorithms": ("svrg", "svrg")}, "without repeats"),
    ({"bits": 1}, "from 2 to 16"),
    ({"bits": 17}, "from 2 to 16"),
    ({"rounding": "banker"}, "stochastic"),
    ({"epochs": 0}, "from 1 to 1000000; got 0"),
    ({"epochs": True}, "epochs: an integer; got True"),
    ({"features": 2**21}, "from 1 to 2\\^20"),
    ({"step_size": -1.0}, "> 0"),
    ({"l2": 0.0}, "needs l2 > 0"),
    ({"offset_format": "fixed<1"}, "offset_format"),
    ({"policy": "adaptive", "offset_format": "e4m3fn"}, "fixed-point offset formats only"),
    ({"policy": "sometimes"}, "recentre, fixed, adaptive"),
    ({"policy": "fixed"}, "valid: recentre, adaptive"),
    ({"seed": -1}, "from 0 to 2\\^64 − 1"),
    ({"sync_every": 4}, "sync_every: applies to mixed, which trains networks"),
])
def test_validate_names_the_problem(change, match):
    with pytest.raises(ValueError, match=match):
        TrainConfig(**change).validate()


def test_default_config_is_valid():
    TrainConfig().validate()
    TrainConfig(algorithms=("sgd", "svrg", "lpsgd", "lpsvrg", "halp"), policy="adaptive").validate()


def test_data_format_rule():
    assert default_data_format(1.0, 8) == FixedFormat(2, 6)          # digits/16, bias 1
    assert default_data_format(0.99, 8) == FixedFormat(1, 7)
    assert default_data_format(3.0, 4) == FixedFormat(3, 1)
    with pytest.raises(ValueError, match="does not fit"):
        default_data_format(300.0, 8)


def test_accelerator_algorithms_need_an_address():
    with pytest.raises(ValueError, match="connect=ADDRESS"):
        train(TrainConfig(algorithms=("svrg", "halp")), connect=None)


def test_host_only_run_resolves_defaults_and_is_deterministic():
    cfg = TrainConfig(algorithms=("sgd", "svrg"), epochs=3)
    seen, started = [], []
    a = train(cfg, connect=None, on_epoch=seen.append, on_start=started.append)
    b = train(cfg, connect=None)
    rc = a.config
    assert started == ["sgd", "svrg"]
    assert cfg.resolved().items() <= rc.items()
    assert a.reference_summary()["grad_norm"] <= 1e-12 and rc["reference_loss"] == a.reference.loss
    x = load_dataset("digits").x
    assert rc["smoothness"] == np.max(np.sum(x ** 2, axis=1)) / 2 + 0.01
    assert rc["step_size"] == 0.5 / rc["smoothness"] and rc["inner_steps"] == 1797
    assert rc["policies"] == {}
    assert rc["mu"] == pytest.approx(0.1) and rc["data_format"] == "fixed<2,6>" and rc["offset_format"] == "fixed<1,7>"
    assert [(r.algorithm, r.epoch) for r in seen] == [(al, e) for al in ("sgd", "svrg") for e in range(4)]
    assert seen[0].gap == pytest.approx((np.log(10) - rc["reference_loss"]) / rc["reference_loss"])
    for algo in ("sgd", "svrg"):
        assert np.array_equal(a.weights[algo], b.weights[algo])
    assert seen[-1].gap < seen[-4].gap and seen[-1].bits == 64


def test_a_resumed_run_goes_on_from_the_checkpoints_algorithm_and_refuses_another_runs():
    assert still_to_run(("sgd", "halp", "lpsgd"), None) == ["sgd", "halp", "lpsgd"]
    assert still_to_run(("sgd", "halp", "lpsgd"), SimpleNamespace(algorithm="halp")) == ["halp", "lpsgd"]
    with pytest.raises(ValueError, match="the checkpoint is of algorithm 'svrg', which this run does not have"):
        still_to_run(("sgd", "halp"), SimpleNamespace(algorithm="svrg"))
