"""`cosim energy`: hand-built traces priced exactly by the documented rules, model files that
override one value (and only its term) or name the key they get wrong, and the command on a
real run's trace."""
import json
import math
import subprocess
import sys

import numpy as np
import pytest

from cosim.energy import (EnergyError, access_price, account, epoch_costs, load_model, memory_sizes,
                          net_memory_sizes, parse_op, price_op, target_rows)
from cosim.trace import TraceReader, TraceWriter
from host.models import Objective
from protocol.codec import pack_header
from protocol.channel import TapEvent as Event

COSIM = [sys.executable, "-m", "cosim"]
CONFIG = {"dataset": "synthetic", "model": "softmax", "n_samples": 100, "n_features": 4, "n_outputs": 2,
          "data_format": "fixed<2,6>", "offset_format": "fixed<1,7>", "acc_format": "fp32"}

# The documented rules, written out: Horowitz's points and the lines through them.
FP64_ADD = 0.4 + (0.9 - 0.4) * (64 - 16) / (32 - 16)                 # float adder, 64 bits
FP64_MUL = 1.1 + (3.7 - 1.1) * (53 * 53 - 11 * 11) / (24 * 24 - 11 * 11)  # significands 53 × 53
SRAM_8K_PER_BYTE = 10 / 8                                            # every memory here ≤ 8 KB



def _epoch(algorithm, epoch, gap, **extra):
    return {"algorithm": algorithm, "epoch": epoch, "loss": 1.0, "gap": gap, "grad_norm": 0.1,
            "bits": 8, "offset_format": "fixed<1,7>", "seconds": 0.1, "ops": {}, "saturations": 0,
            "scale": None, **extra}


def _hand_built(path):
    """HALP for one epoch through a few messages, then a host algorithm; returns the messages
    (direction, header, frames) so the test can size them itself."""
    sent = []
    with TraceWriter(path, config=CONFIG, seed=0) as w:
        def msg(direction, mtype, body, frames=(), tensors=()):
            header = {"v": [1, 2], "type": mtype, "seq": len(sent) + 1, "session": "s", "body": body,
                      "tensors": list(tensors)}
            w.message(Event(float(len(sent)), direction, header, list(frames)))
            sent.append((direction, header, list(frames)))

        w.mark("algorithm", name="halp")
        msg("h2a", "configure", {"problem": "softmax", "n_samples": 100, "n_features": 4, "n_outputs": 2,
                                 "data_format": "fixed<2,6>", "offset_format": "fixed<1,7>",
                                 "acc_format": "fp32"})
        w.epoch(_epoch("halp", 0, 1.0, host_ops={"add fp64": 100}))
        msg("h2a", "recentre", {"scale": 0.5}, [b"\x00" * 64, b"\x00" * 1600],
            [{"name": "full_grad", "dtype": "<f8", "shape": [4, 2], "frame": 1},
             {"name": "anchor", "dtype": "<f8", "shape": [100, 2], "frame": 2}])
        msg("a2h", "ack", {"of": "recentre", "info": {"ops": {"round fp32 nearest_even": 209}}})
        msg("a2h", "epoch_report", {"epoch": 1, "steps": 10, "ops": {"mul fp32": 500},
                                    "memory": {"data read": 1000, "offset read": 600}})
        w.epoch(_epoch("halp", 1, 1e-3, host_ops={"add fp64": 100, "mul fp64": 10},
                       ops={"add fixed<4,4>": 1000, "mul fp32": 500, "mul fixed<2,6>*fixed<1,7>": 100,
                            "rng bits": 3200}))
        w.mark("algorithm", name="svrg")
        w.epoch(_epoch("svrg", 0, 1.0, host_ops={"mul fp64": 1000}))
        w.epoch(_epoch("svrg", 1, 1e-3, host_ops={"mul fp64": 1000}))
    return sent


def test_a_hand_built_trace_costs_what_the_rules_say_exactly(tmp_path):
    path = tmp_path / "trace.cosim"
    sent = _hand_built(path)
    report = account(TraceReader(path), load_model(None), "pcie3x8", name="hand")
    compute = [1000 * 0.03, 500 * 3.7, 100 * 0.2, 3200 * (3 * 0.1 / 32),
               209 * 0.9]                                        # the recentre's conversions
    host = [200 * FP64_ADD, 2010 * FP64_MUL]
    # the epoch report's figures, then the recentre's writes: q and q_a (2·8 fixed<1,7>),
    # g̃ (8 fp32), P (100·2 fp32)
    memory = [1000 * SRAM_8K_PER_BYTE, 600 * SRAM_8K_PER_BYTE, 16 * SRAM_8K_PER_BYTE,
              32 * SRAM_8K_PER_BYTE, 800 * SRAM_8K_PER_BYTE]
    wire = {d: sum(len(pack_header(h)) + sum(map(len, f)) for dd, h, f in sent if dd == d)
            for d in ("h2a", "a2h")}
    link = [8 * wire["h2a"] * 5.6, 8 * wire["a2h"] * 5.6]
    assert report.total_pj("compute") == math.fsum(compute)
    assert report.total_pj("memory") == math.fsum(memory)
    assert report.total_pj("host") == math.fsum(host)
    assert report.total_pj("link") == math.fsum(link)
    assert report.total_pj() == math.fsum(compute + memory + host + link)
    assert report.notes == [] and not report.truncated
    # per algorithm, and the energy to a gap of 1e-2: epoch 1 of each, ratio to the cheapest
    algs = report.by_algorithm()
    assert list(algs) == ["halp", "svrg"]
    assert algs["svrg"] == {"compute": 0.0, "memory": 0.0, "host": 2000 * FP64_MUL, "link": 0.0}
    target = report.to_target(1e-2)
    assert (target["halp"].epoch, target["svrg"].epoch) == (1, 1)
    assert target["halp"].pj == pytest.approx(report.total_pj() - 2000 * FP64_MUL, rel=1e-12)
    assert report.to_target(1e-4) == {"halp": None, "svrg": None}
    rows = {r["algorithm"]: r for r in target_rows([report], 1e-2)}
    cheap, dear = sorted(rows, key=lambda a: rows[a]["pj"])
    assert rows[cheap]["ratio"] == 1.0
    assert rows[dear]["ratio"] == pytest.approx(rows[dear]["pj"] / rows[cheap]["pj"])
    # another link prices the same bits
    eth = account(TraceReader(path), load_model(None), "eth10g")
    assert eth.total_pj("link") == math.fsum([8 * wire["h2a"] * 400.0, 8 * wire["a2h"] * 400.0])
    assert eth.total_pj("compute") == report.total_pj("compute")


@pytest.mark.parametrize("toml, changed", [
    ('[link]\npcie3x8 = 11.2\n', {("link", "h2a"), ("link", "a2h")}),
    ('[ops]\n"mul fp32" = {value = 2.5, source = "a synthesis run", node = "7 nm"}\n',
     {("compute", "mul fp32")}),
    ('[memory]\nsram_8k = 12.5\n', {("memory", k) for k in ("data read", "offset read", "offset write",
                                                            "gradient write", "anchor write")}),
    ('[compute]\nint_mul_8 = 0.25\n', {("compute", "mul fixed<2,6>*fixed<1,7>")}),
])
def test_overriding_one_value_changes_exactly_its_terms(tmp_path, toml, changed):
    path = tmp_path / "trace.cosim"
    _hand_built(path)
    (tmp_path / "m.toml").write_text(toml)
    model = load_model(tmp_path / "m.toml")
    base = {(i.category, i.key): i.pj for i in account(TraceReader(path), load_model(None), "pcie3x8").items}
    report = account(TraceReader(path), model, "pcie3x8")
    now = {(i.category, i.key): i.pj for i in report.items}
    assert now.keys() == base.keys()
    assert {k for k in now if now[k] != base[k]} == changed
    (name,) = model.overridden
    assert [o["name"] for o in report.overridden] == [name]
    assert report.overridden[0]["default"] != report.overridden[0]["value"]


def test_a_new_link_and_the_sources_of_a_value_table(tmp_path):
    (tmp_path / "m.toml").write_text('[link]\ncxl = {value = 3.0, source = "my measurement", node = "5 nm"}\n')
    model = load_model(tmp_path / "m.toml")
    assert "cxl" in model.links() and model.value("link.cxl").source == "my measurement"
    path = tmp_path / "trace.cosim"
    _hand_built(path)
    report = account(TraceReader(path), model, "cxl")
    (h2a,) = [i for i in report.items if i.key == "h2a"]
    assert (h2a.each_pj, h2a.source, h2a.node) == (3.0, "my measurement", "5 nm")


@pytest.mark.parametrize("toml, named", [
    ("[compute]\nint_add_9 = 1\n", "compute.int_add_9"),
    ("[memroy]\ndram = 1\n", "memroy"),
    ("[memory]\ndram = {value = 2600, sorce = 'x'}\n", "memory.dram.sorce"),
    ('[ops]\n"mul fp33" = 1\n', "ops.mul fp33"),
    ("[link]\npcie3x88 = 4\n", "link.pcie3x88"),
    ("[link]\nnew = {value = 4}\n", "link.new"),
    ("[compute]\nint_add_8 = -1\n", "compute.int_add_8"),
])
def test_a_bad_model_file_names_the_key(tmp_path, toml, named):
    (tmp_path / "m.toml").write_text(toml)
    with pytest.raises(EnergyError, match=named.replace(".", r"\.")):
        load_model(tmp_path / "m.toml")


def test_the_cli_refuses_a_bad_model_file_in_one_line(tmp_path):
    path = tmp_path / "trace.cosim"
    _hand_built(path)
    (tmp_path / "m.toml").write_text("[compute]\nint_add_9 = 1\n")
    r = subprocess.run([*COSIM, "energy", str(path), "--model", str(tmp_path / "m.toml")],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and "compute.int_add_9" in lines[0]
    r = subprocess.run([*COSIM, "energy", str(path), "--link", "carrier-pigeon"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "carrier-pigeon" in r.stderr and "pcie3x8" in r.stderr


def test_operation_keys_and_rules():
    model = load_model(None)
    assert parse_op("round fixed<1,7> stochastic")[0] == "round"
    assert price_op("add fixed<30,40>", model).pj > price_op("add fixed<16,16>", model).pj  # 70-bit register
    assert price_op("div fp32", model).pj == 5 * 3.7
    assert price_op("mul mxfp8", model).pj == price_op("mul e4m3fn", model).pj            # per element
    assert price_op("ldexp fp32", model).pj == 0.03                                       # 8-bit exponent
    for bad in ("mul fp32 nearest_even", "round fp32", "pow fp32", "add fp33", "add fp32*fp32"):
        with pytest.raises(ValueError):
            parse_op(bad)
    with pytest.raises(EnergyError, match=r"\[ops\]"):
        price_op("add float<1,1,finite>", model)          # 3 bits: below the float adder's range
    with pytest.raises(EnergyError, match=r"\[ops\]"):
        price_op("exp fixed<2,6>", model)


def test_memory_sizes_and_access_energy():
    assert memory_sizes(CONFIG) == {"data": 800, "offset": 16, "gradient": 32, "anchor": 800}
    model = load_model(None)
    assert access_price(8 << 10, model).pj == 10 and access_price(100, model).pj == 10
    assert access_price(32 << 10, model).pj == 20 and access_price(1 << 20, model).pj == 100
    assert access_price(16 << 10, model).pj == pytest.approx(10 * 2 ** 0.5)   # log-log: √ between 8 and 32 KB
    assert access_price((1 << 20) + 1, model).pj == 1300                      # DRAM beyond 1 MB
    with pytest.raises(EnergyError, match="n_outputs"):
        memory_sizes({"n_samples": 3})


def test_host_operation_counts_by_hand():
    x = np.arange(6, dtype=float).reshape(3, 2)
    obj = Objective("softmax", x, np.array([0, 1, 1]), 0.1, n_outputs=2)
    # scores 3·2·2 mul, 3·1·2 add; softmax rows: 1 cmp, 2 + 1 add, 2 exp, 2 div each;
    # − targets 6 add; xᵀr 2·2·3 mul, 2·2·2 add; / n 4 div; λw 4 mul; + 4 add
    assert obj.gradient_ops(3) == {"mul fp64": 12 + 12 + 4, "add fp64": 6 + 9 + 6 + 8 + 4,
                                   "cmp fp64": 3, "exp fp64": 6, "div fp64": 6 + 4}
    # loss: scores; log_softmax rows: 1 cmp, 2 + 1 + 2 add, 2 exp, 1 log; · Y 6 mul;
    # Σ 5 add, / n; w·w 4 mul, Σ 3 add, 0.5·λ·Σ 2 mul, + 1 add
    assert obj.loss_ops() == {"mul fp64": 12 + 6 + 4 + 2, "add fp64": 6 + 15 + 5 + 3 + 1,
                              "cmp fp64": 3, "exp fp64": 6, "log fp64": 3, "div fp64": 1}
    assert Objective("linear", x, np.zeros(3), 0.1).anchor_terms_ops() == {}


@pytest.mark.slow
def test_the_command_on_a_real_run(tmp_path):
    r = subprocess.run([*COSIM, "run", "--epochs", "2", "--inner-steps", "100", "--algorithm", "halp,lpsgd",
                        "--out", str(tmp_path / "runs")], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr + r.stdout
    (run,) = (tmp_path / "runs").iterdir()
    out = [str(tmp_path / "e.json"), str(tmp_path / "e.png")]
    r = subprocess.run([*COSIM, "energy", str(run), "--target-gap", "1", "--json", out[0], "--png", out[1]],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr + r.stdout
    for fragment in ("energy by category", "accelerator compute", "accelerator memory", "host fp64",
                     "what was priced", "Horowitz, ISSCC 2014 (45 nm, 0.9 V)", "energy to reach a relative gap",
                     "× cheapest", "mul fixed<2,6>*fixed<2,7>"):
        assert fragment in r.stdout, fragment
    doc = json.loads((tmp_path / "e.json").read_text())
    (report,) = doc["runs"]
    assert list(report["algorithms"]) == ["halp", "lpsgd"] and report["notes"] == []
    assert all(report["categories"][c] > 0 for c in ("compute", "memory", "host", "link"))
    assert report["total_pj"] == pytest.approx(math.fsum(report["categories"].values()))
    targets = {t["algorithm"]: t for t in doc["to_target"]}
    assert targets.keys() == {"halp", "lpsgd"} and all(t["epoch"] is not None for t in targets.values())
    assert min(t["ratio"] for t in targets.values()) == 1.0
    assert (tmp_path / "e.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    _epoch_costs_price_what_the_daemon_did(run / "trace.cosim")


def _epoch_costs_price_what_the_daemon_did(trace):
    """epoch_costs at the run's own width is the compute and memory energy of the epoch the daemon
    reported (its operation counts and memory figures, priced by hand); other widths differ."""
    records = list(TraceReader(trace))
    config = records[0]["config"]
    reply = next(r["header"]["body"] for r in records
                 if r.get("kind") == "message" and r["header"].get("type") == "epoch_report")
    model, sizes = load_model(None), memory_sizes(config)
    by_hand = math.fsum([n * price_op(k, model).pj for k, n in reply["ops"].items()]
                        + [b * access_price(sizes[k.split()[0]], model).pj / 8 for k, b in reply["memory"].items()])
    costs = epoch_costs(config, "halp", model)
    assert list(costs) == list(range(2, 17))          # fixed<1,7>: one integer bit, widths 2..16
    assert costs[8] == pytest.approx(by_hand, rel=1e-12)
    assert all(a < b for a, b in zip(list(costs.values()), list(costs.values())[1:]))


NET = {"layers": [[4, 3, "relu"], [3, 2, "none"]], "n_samples": 10, "weights_format": "fp8_ibm",
       "activations_format": "fp8_ibm", "errors_format": "fp8_ibm", "weight_grads_format": "fp16_ibm",
       "acc_format": "fp16_ibm", "update_format": "fp16_ibm"}


def test_network_memories_and_request_traffic():
    # P = 5·3 + 4·2 = 23 parameters; batch 2; 10 samples of 4 features, 2 classes (1 label bit)
    assert net_memory_sizes(NET, 2) == {
        "weights": 23, "master weights": 46, "weight gradients": 46,
        "activations": 2 * (5 + 3 + 4 + 2),          # each layer's input with the ones, and its output
        "errors": 2 * (5 + 3),                       # the widest layer's δ in and out
        "probabilities": 2 * 2 * 2, "data": 10 * 4, "labels": 2,    # 10 bits
        "anchor": 23 * 8, "full gradient": 23 * 8, "offset": 23 * 2,  # HALP: float64 w̃ and g̃, 16-bit offsets
        "gradient sum": 23 * 8}                                        # mixed's local steps: G in float64
    with pytest.raises(EnergyError, match="update_format"):
        net_memory_sizes({k: v for k, v in NET.items() if k != "update_format"}, 1)
    records = [{"kind": "header", "config": {"batch_size": 2}}]
    for mtype in ("configure_net", "net_grad", "net_grad", "run_net_epoch", "fetch_net"):
        body = NET if mtype == "configure_net" else {}
        records.append({"kind": "message", "dir": "h2a", "header": {"type": mtype, "body": body}, "frames": []})
    # an older trace: a network's host algorithm's epoch record without host_ops, an accelerator
    # one's with an empty count
    records += [{"kind": "epoch", "algorithm": "sgd", "epoch": 0},
                {"kind": "epoch", "algorithm": "lpsgd", "epoch": 0, "host_ops": {}}]
    report = account(records, load_model(None), "pcie3x8")
    assert report.notes == [("the epoch records of sgd carry no host_ops (a network's host algorithms before "
                             "they were counted): "
                             "their host float64 work is not included")]
    memory = {i.key: i.quantity for i in report.items if i.category == "memory"}
    # configure_net and fetch_net move the fp16 master weights; each net_grad writes Q_w(w) and
    # reads ΔW (fp16); run_net_epoch reads the masters and writes Q_w(w)
    assert memory == {"master weights write": 46, "master weights read": 2 * 46, "weights write": 3 * 23,
                      "weight gradients read": 2 * 46}
    assert report.total_pj("memory") == (46 + 92 + 69 + 92) * SRAM_8K_PER_BYTE



def test_fetch_net_reads_halps_offset_only_after_a_recentre_net():
    def message(mtype: str, body: dict) -> dict:
        return {"kind": "message", "dir": "h2a", "header": {"type": mtype, "body": body}, "frames": []}

    records = [{"kind": "header", "config": {"batch_size": 2}}, message("configure_net", NET),
               message("fetch_net", {}), message("recentre_net", {"offset_format": "fixed<1,7>"}),
               message("fetch_net", {})]
    memory = {i.key: i.quantity for i in account(records, load_model(None), "pcie3x8").items if i.category == "memory"}
    # two fetches of the fp16 masters; the second also reads the 8-bit offset the recentre wrote
    assert memory["master weights read"] == 2 * 46
    assert memory["offset write"] == memory["offset read"] == 23
    assert memory["anchor write"] == memory["full gradient write"] == 23 * 8


def test_a_net_grad_with_local_steps_moves_the_copy_and_reads_the_sum():
    records = [{"kind": "header", "config": {"batch_size": 2}},
               {"kind": "message", "dir": "h2a", "header": {"type": "configure_net", "body": NET}, "frames": []},
               {"kind": "message", "dir": "h2a", "header": {"type": "net_grad", "body": {"steps": 4}}, "frames": []},
               {"kind": "epoch", "algorithm": "mixed", "epoch": 1, "host_ops": {}}]
    memory = {i.key: i.quantity for i in account(records, load_model(None), "pcie3x8").items if i.category == "memory"}
    # configure_net's masters, then the round: R_u(w) into a copy of the masters' size, its Q_w, G read back
    assert memory == {"master weights write": 2 * 46, "master weights read": 46, "weights write": 23,
                      "gradient sum read": 23 * 8}


@pytest.mark.slow
def test_a_mixed_run_with_local_steps_is_priced_from_its_replies(tmp_path):
    """`--sync-every 4` over 10 steps: three net_grad rounds of 4, 4 and 2 local steps; the
    epoch's compute is the replies' operations (every local step's) priced one by one."""
    r = subprocess.run([*COSIM, "run", "--model", "mlp:16", "--algorithm", "mixed", "--sync-every", "4",
                        "--epochs", "1", "--inner-steps", "10", "--out", str(tmp_path / "runs")],
                       capture_output=True, text=True, timeout=300, check=False)
    assert r.returncode == 0, r.stderr + r.stdout
    (run,) = (tmp_path / "runs").iterdir()
    assert json.loads((run / "metrics.json").read_text())["epochs"][-1]["messages"] == 3
    records = list(TraceReader(run / "trace.cosim"))
    bodies = [(r["header"]["type"], r["header"].get("body") or {}) for r in records if r.get("kind") == "message"]
    assert [b.get("steps") for t, b in bodies if t == "net_grad"] == [4, 4, 2]
    grads = [b["ops"] for t, b in bodies if t == "net_gradient"]
    params = 1210
    assert sum(ops["mul fp8_ibm*fp8_ibm"] for ops in grads) == 10 * 3 * params     # every step's passes, B = 1
    model = load_model(None)
    report = account(records, model, "pcie3x8")
    (epoch,) = [e for e in report.epochs if e.epoch == 1]
    by_hand = math.fsum(n * price_op(k, model).pj for ops in grads for k, n in ops.items())
    assert epoch.pj["compute"] == pytest.approx(by_hand, rel=1e-12)
    memory = {i.key: i.quantity for i in report.items if i.category == "memory"}
    # G in float64: written every step, read from each round's second step on and once for the reply
    assert memory["gradient sum write"] == 10 * 8 * params and memory["gradient sum read"] == (7 + 3) * 8 * params


def test_a_cnns_memories_cover_every_key_its_kernel_reports():
    """configure_net's convolution entries (protocol 1.6): per sample a convolution keeps its
    input, its product's output and its pooled output, and δ in and out; its pools' indices
    take 2 bits each. Every memory key the kernel's counts use (layer_memory's roles, the
    max-pool's index among them) has a memory."""
    from accel.backends.net import layer_of, step_counts
    from accel.spec.layer import RECIPES as LAYER_RECIPES

    cnn = {**NET, "layers": [["conv3", 1, 6, 8, 8, "relu", 2], ["conv3", 6, 16, 4, 4, "relu", 2],
                             [64, 10, "none"]]}
    p = 60 + 880 + 650
    sizes = net_memory_sizes(cnn, 2)
    want = {
        "weights": p, "master weights": 2 * p, "weight gradients": 2 * p,
        "activations": 2 * ((64 + 384 + 96) + (96 + 256 + 64) + (65 + 10)),
        "errors": 2 * (64 + 384),                    # the first convolution's δ in and out
        "probabilities": 2 * 10 * 2, "data": 10 * 64, "labels": 5,    # 10 samples, 4 label bits
        "anchor": 8 * p, "full gradient": 8 * p, "offset": 2 * p,
        "index": 2 * (96 + 64) * 2 // 8}              # 96 + 64 pooled outputs, 2 bits each
    assert {k: sizes.get(k) for k in want} == want
    layers = [layer_of(i, lay, 64) for i, lay in enumerate(cnn["layers"])]
    _, memory = step_counts(layers, LAYER_RECIPES["fp8-ibm"], 2, update=True, decay=True)
    assert {k.rsplit(" ", 1)[0] for k in memory} <= set(sizes) and "index write" in memory
    assert "index" not in net_memory_sizes(NET, 2)


@pytest.mark.slow
def test_a_network_run_mixed_pays_the_link_for_its_weights(tmp_path):
    steps = 20
    r = subprocess.run([*COSIM, "run", "--model", "mlp:16", "--algorithm", "mixed,lpsgd", "--recipe", "fp8-ibm",
                        "--epochs", "1", "--inner-steps", str(steps), "--out", str(tmp_path / "runs")],
                       capture_output=True, text=True, timeout=300, check=False)
    assert r.returncode == 0, r.stderr + r.stdout
    (run,) = (tmp_path / "runs").iterdir()
    r = subprocess.run([*COSIM, "energy", str(run), "--json", str(tmp_path / "e.json")],
                       capture_output=True, text=True, timeout=120, check=False)
    assert r.returncode == 0, r.stderr + r.stdout
    assert "recipe fp8-ibm" in r.stdout and "round fp16_ibm stochastic" in r.stdout
    (doc,) = json.loads((tmp_path / "e.json").read_text())["runs"]
    assert doc["notes"] == [] and all(doc["categories"][c] > 0 for c in ("compute", "memory", "host", "link"))

    records = list(TraceReader(run / "trace.cosim"))
    model = load_model(None)
    report = account(records, model, "pcie3x8")
    bodies = [(r["header"]["type"], r["header"].get("body") or {}) for r in records if r.get("kind") == "message"]
    # one epoch's compute, by hand: the daemon's own counts priced one by one (mixed: every
    # net_grad reply, lpsgd: the epoch report)
    grads = [b["ops"] for t, b in bodies if t == "net_gradient"]
    (epoch,) = [b["ops"] for t, b in bodies if t == "epoch_report"]
    assert len(grads) == steps
    epochs = {(e.algorithm, e.epoch): e.pj for e in report.epochs}
    for alg, counts in (("mixed", grads), ("lpsgd", [epoch])):
        by_hand = math.fsum(n * price_op(k, model).pj for ops in counts for k, n in ops.items())
        assert epochs[(alg, 1)]["compute"] == pytest.approx(by_hand, rel=1e-12)
    # mixed sends w and gets ΔW back as float64 every step (and the 4-byte sample index); lpsgd
    # sends the order (4 bytes a step) and fetches w once: the tensors differ by 2·8·P bytes a
    # step less one fetch; mixed's headers (a request and a reply with the step's counts)
    # add under 1 KB a step
    layers = next(b for t, b in bodies if t == "configure_net")["layers"]
    params = sum((fi + 1) * fo for fi, fo, _ in layers)
    assert params == 1210
    per_alg = report.by_algorithm()
    extra_bits = (per_alg["mixed"]["link"] - per_alg["lpsgd"]["link"]) / 5.6
    tensors = 8 * (2 * 8 * params * steps - 8 * params)
    assert tensors < extra_bits < tensors + 8 * 1024 * steps
    # the network's memories: every net_grad writes Q_w(w) (fp8) into the weights memory
    weights = next(i for i in report.items if i.key == "weights write")
    assert weights.quantity == steps * params + params + steps * params   # mixed's steps; lpsgd: start + updates
