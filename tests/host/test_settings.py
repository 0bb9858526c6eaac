"""Each setting declared once (host/settings.py, cosim/options.py) and everything read off it:
TrainConfig's fields and checks, the `cosim run` flags, config files, the docs table."""
import dataclasses
import os
import subprocess
import sys
from pathlib import Path

import pytest
import typer

from cosim.cli import UserError, app, resolve
from cosim.options import RUN_OPTIONS, SETTINGS, config_key, generate
from host.settings import TRAINING
from host.train import TrainConfig
from protocol.doc import splice

DOC = Path(__file__).resolve().parents[2] / "docs" / "host.md"


def test_checked_in_settings_table_matches_the_declarations():
    text = DOC.read_text()
    assert splice(text, generate()) == text, "docs/host.md is out of date: run python -m cosim.options"
    assert "| `bits` | `--bits` | Accelerator word length b" in generate()
    assert "| 0.5/L from the data's smoothness bound |" in generate()


def test_train_config_fields_are_the_declared_settings_in_order():
    fields = dataclasses.fields(TrainConfig)
    assert [f.name for f in fields] == [
        "dataset", "model", "algorithms", "bits", "rounding", "rbits", "epochs", "seed", "l2", "step_size",
        "mu", "mu_rule", "inner_steps", "batch_size", "sync_every", "data_format", "offset_format", "acc_format", "recipe",
        "lanes", "policy", "samples", "features", "condition", "classes", "timeout"]
    assert [(f.name, f.type, f.default) for f in fields] == [(s.name, s.annotation, s.default) for s in TRAINING]
    assert TrainConfig().bits == 8 and TrainConfig().step_size is None and TrainConfig().algorithms == ("halp",)
    assert TrainConfig(bits=4) == TrainConfig(bits=4) != TrainConfig()


@pytest.mark.parametrize("name, value, message", [
    ("bits", 20, "bits: an integer from 2 to 16; got 20"),
    ("bits", 1, "bits: an integer from 2 to 16; got 1"),
    ("epochs", True, "epochs: an integer; got True"),
    ("epochs", 9223372036854775807, "epochs: an integer from 1 to 1000000; got 9223372036854775807"),
    ("seed", 2**64, "seed: an integer from 0 to 2^64 − 1; got 18446744073709551616"),
    ("features", 2**20 + 1, "features: an integer from 1 to 2^20; got 1048577"),
    ("l2", "0.1", "l2: a number; got '0.1'"),
    ("l2", -1e-3, "l2: a finite number >= 0; got -0.001"),
    ("l2", 10**400, "l2: a finite number >= 0; got 1" + "0" * 400),
    ("step_size", 0.0, "step_size: a finite number > 0; got 0.0"),
    ("timeout", float("inf"), "timeout: a finite number > 0; got inf"),
    ("algorithms", 5, "algorithms: a list of strings; got 5"),
    ("algorithms", ("svrg", "svrg"), "algorithms: a non-empty list without repeats from sgd, svrg, lpsgd, lpsvrg, "
                                     "halp, mixed; got ('svrg', 'svrg')"),
    ("model", "mlp:0", "model: choose one of linear, logistic, softmax, or a network mlp:W[,W...] (ReLU "
                       "hidden layers of those widths) or cnn; got 'mlp:0'"),
    ("recipe", "fp4", "recipe: 'fp4' is not a recipe; start with one of fp8-ibm, fp8-ibm-nochunk"),
    ("dataset", "mnist", "dataset: choose one of digits, digits64, breast_cancer, diabetes, synthetic_linear, "
                         "synthetic_logistic, synthetic_softmax or a path to a .npz file; got 'mnist'"),
    ("mu_rule", "wide", "mu_rule: choose one of widen, fixed; got 'wide'"),
    ("backend", "pcie", "backend: choose one of emulated, rtl; got 'pcie'"),
    ("transport", "udp", "transport: choose one of ipc, tcp; got 'udp'"),
    ("out", ["a"], "out: a string; got ['a']"),
    ("name", "../x", "name: a plain directory name under --out (no '/', not '.' or '..'); got '../x'"),
    ("restarts", -1, "restarts: an integer >= 0; got -1"),
])
def test_a_refused_value_is_one_line_naming_the_setting_and_what_it_accepts(name, value, message):
    with pytest.raises(ValueError) as info:
        SETTINGS[name].check(value)
    assert str(info.value) == message


def test_checks_that_raise_give_their_own_reason_and_unset_is_only_for_rules():
    with pytest.raises(ValueError, match=r"^offset_format: cannot parse number format 'fixed<1'; accepted forms"):
        SETTINGS["offset_format"].check("fixed<1")
    with pytest.raises(ValueError, match=r"^fpga: 'tcp://x:1' is not an Etherbone address; use udp://HOST:PORT"):
        SETTINGS["fpga"].check("tcp://x:1")
    SETTINGS["step_size"].check(None)          # by rule: 0.5/L
    SETTINGS["fpga"].check("udp://127.0.0.1:1234")
    with pytest.raises(ValueError, match="^bits: an integer; got None$"):
        SETTINGS["bits"].check(None)
    with pytest.raises(ValueError, match="^bits: an integer from 2 to 16; got 17$"):
        TrainConfig(bits=17).validate()


def test_every_setting_is_a_flag_with_its_declared_help():
    command = typer.main.get_command(app).commands["run"]
    params = {p.name: p for p in command.params}
    for s in TRAINING + RUN_OPTIONS:
        assert params[s.name].opts + params[s.name].secondary_opts == list(s.option_names), s.name
        assert params[s.name].help == s.describe() and params[s.name].default is None, s.name
    assert params["algorithms"].opts == ["--algorithm", "-a"]
    assert {"config", "connect", "keys", "server_key", "resume"} <= set(params)    # command options
    assert {p.name for p in typer.main.get_command(app).commands["host"].params} == set(params)


def test_run_help_shows_the_groups_and_the_default_rules():
    r = subprocess.run([sys.executable, "-m", "cosim", "run", "--help"], capture_output=True, text=True,
                       timeout=60, env={**os.environ, "COLUMNS": "400"})
    assert r.returncode == 0, r.stderr
    for heading in ("Problem", "Training", "Accelerator", "Run"):
        assert f"─ {heading} ─" in r.stdout
    assert "Step size α. A finite number > 0. Default 0.5/L from the data's smoothness bound." in r.stdout
    assert "--restarts" in r.stdout and "An integer >= 0. Default 0: the run ends with an error." in r.stdout


def test_config_keys_and_flags_resolve_in_order(tmp_path):
    """Defaults < config file < flags; a flag's own name (algorithm) and '-' work as file keys."""
    assert config_key("algorithm") == "algorithms" and config_key("step-size") == "step_size"
    assert config_key("bits") == "bits"
    path = tmp_path / "run.toml"
    path.write_text('algorithm = ["svrg"]\nstep-size = 0.125\nbits = 6\ntransport = "tcp"\nrestarts = 2\n')
    cfg, run = resolve({"bits": 5, "epochs": None}, path)
    assert (cfg.algorithms, cfg.step_size, cfg.bits, cfg.epochs) == (("svrg",), 0.125, 5, 20)
    assert {k: run[k] for k in ("backend", "transport", "out", "name", "fpga", "restarts")} == {
        "backend": "emulated", "transport": "tcp", "out": "runs", "name": None, "fpga": None, "restarts": 2}
    resolved = run["resolved"]
    assert resolved["offset_format"] == "fixed<1,4>" and resolved["inner_steps"] == 1797   # rules, at b = 5
    assert resolved["restarts"] == 2 and resolved["bits"] == 5
    path.write_text("restarts = -1\n")
    with pytest.raises(UserError, match=r"^restarts: an integer >= 0; got -1$"):
        resolve({}, path)
    path.write_text("bitz = 8\n")
    with pytest.raises(UserError, match="unknown key 'bitz'; valid keys: acc_format, algorithms, backend, batch_size, bits"):
        resolve({}, path)
