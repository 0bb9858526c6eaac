"""`cosim trace export`: the tables read back (pyarrow) give the trace's own numbers."""
import subprocess
import sys
from collections import Counter

import msgpack
import pyarrow.csv
import pyarrow.parquet
import pytest

from cosim.trace import TraceError, TraceReader, TraceTables, TraceWriter, summarize
from protocol.channel import TapEvent as Event

COSIM = [sys.executable, "-m", "cosim"]
OPS = {"mul fixed<2,6>*fixed<1,7>": 100, "add fp32": 380, "rng bits": 3200}



def _header(mtype, seq, body, tensors=()):
    return {"v": [1, 2], "type": mtype, "seq": seq, "session": "s", "body": body,
            "tensors": list(tensors)}


def _epoch(algorithm, epoch, ops, scale):
    return {"algorithm": algorithm, "epoch": epoch, "loss": 0.7 - epoch / 10, "gap": 0.2 / (epoch + 1),
            "grad_norm": 0.1, "bits": 8, "offset_format": "fixed<1,7>", "seconds": epoch * 0.03125,
            "ops": ops, "saturations": epoch, "scale": scale}


def _write(path):
    """Two accelerator algorithms, two epochs each, with progress and tensor frames."""
    order = {"name": "order", "dtype": "<i8", "shape": [4], "frame": 1}
    with TraceWriter(path, config={"dataset": "digits"}, seed=3) as w:
        w.message(Event(10.0, "h2a", _header("hello", 1, {"client": "t"}), []))
        w.message(Event(10.5, "a2h", _header("capabilities", 1, {"backend": "emulated", "spec": [2, 0]}), []))
        seq, t = 1, 11.0
        for algorithm in ("halp", "lpsgd"):
            w.mark("algorithm", name=algorithm)
            w.epoch(_epoch(algorithm, 0, {}, None))
            for epoch in (1, 2):
                seq, t = seq + 1, t + 1.0
                w.message(Event(t, "h2a", _header("run_epoch", seq, {"epoch": epoch}, [order]), [b"\x01" * 32]))
                w.message(Event(t + 0.25, "a2h", _header("progress", seq, {"of": "run_epoch", "info": {}}), []))
                w.message(Event(t + 0.5, "a2h", _header("epoch_report", seq, {
                    "epoch": epoch, "ops": OPS, "work": {"seconds": 0.125}}), []))
                w.epoch(_epoch(algorithm, epoch, OPS, 0.5 if algorithm == "halp" else None))


def _expected(path):
    """The rows each table must have, straight from the reader."""
    messages, epochs, ops = [], [], []
    for index, offset, r in TraceReader(path).entries():
        if r["kind"] == "message":
            messages.append({"index": index, "offset": offset, "t": r["t"], "stamped_by": r["stamped_by"],
                             "dir": r["dir"], "type": r["header"]["type"], "seq": r["header"]["seq"],
                             "bytes": r["bytes"]})
        elif r["kind"] == "epoch":
            epochs.append({"index": index, "offset": offset,
                           **{k: v for k, v in r.items() if k not in ("kind", "ops")}})
            ops += [{"index": index, "algorithm": r["algorithm"], "epoch": r["epoch"], "op": op,
                     "count": n} for op, n in r["ops"].items()]
    return {"messages": messages, "epochs": epochs, "ops": ops}


def cosim(*args):
    return subprocess.run([*COSIM, *args], capture_output=True, text=True, timeout=60)


def _check_tables(tables, path):
    expected = _expected(path)
    for name in ("messages", "epochs", "ops"):
        assert tables[name].to_pylist() == expected[name], name
    # and the totals `cosim trace show` prints
    s = summarize(path)
    sizes, ops = Counter(), Counter()
    for row in tables["messages"].to_pylist():
        sizes[(row["dir"], row["type"])] += row["bytes"]
    for row in tables["ops"].to_pylist():
        ops[row["op"]] += row["count"]
    assert sizes == s["bytes"] and ops == s["ops"] == Counter({k: 4 * v for k, v in OPS.items()})


def test_parquet_export_round_trips(tmp_path):
    path = tmp_path / "trace.cosim"
    _write(path)
    r = cosim("trace", "export", str(path), "--format", "parquet", "--out", str(tmp_path / "tables"))
    assert r.returncode == 0, r.stderr
    assert "14 messages, 6 epochs, 12 op counts" in r.stdout
    tables = {name: pyarrow.parquet.read_table(tmp_path / "tables" / f"trace-{name}.parquet")
              for name in ("messages", "epochs", "ops")}
    assert tables["messages"].schema.field("seq").type == pyarrow.uint64()
    _check_tables(tables, path)


def test_csv_export_round_trips_beside_the_trace(tmp_path):
    results = tmp_path / "run"
    results.mkdir()
    path = results / "trace.cosim"
    _write(path)
    r = cosim("trace", "export", str(results), "--format", "csv")  # a results directory will do
    assert r.returncode == 0, r.stderr
    tables = {name: pyarrow.csv.read_csv(results / f"trace-{name}.csv")
              for name in ("messages", "epochs", "ops")}
    _check_tables(tables, path)


def test_version_1_and_torn_traces_export(tmp_path):
    """Version 1 records carry no stamped_by or size: the size is computed as the codec packs."""
    path = tmp_path / "v1.cosim"
    header = {"kind": "header", "format": "cosim-trace", "version": 1, "protocol": [1, 2],
              "cosim": "0.1.0", "python": "3.11", "created": "2026-01-01T00:00:00+00:00",
              "seed": 0, "config": {}, "accelerator": None}
    fetch = _header("fetch", 2, {})
    records = [header, {"kind": "message", "t": 5.0, "dir": "h2a", "header": fetch, "frames": [b"ab"]},
               {"kind": "epoch", **_epoch("halp", 1, OPS, 0.5)}]
    pack = msgpack.Packer(use_bin_type=True).pack
    path.write_bytes(b"".join(map(pack, records)) + pack(records[2])[:-5])
    tables = TraceTables.read(path)
    assert tables.truncated
    (row,) = tables.messages.to_pylist()
    assert row["stamped_by"] is None and row["bytes"] == len(msgpack.packb(fetch)) + 2
    assert tables.epochs.column("scale").to_pylist() == [0.5] and tables.ops.num_rows == len(OPS)


def test_epoch_fields_of_mixed_types_are_a_clear_error(tmp_path):
    path = tmp_path / "t.cosim"
    with TraceWriter(path, config={}, seed=0) as w:
        w.epoch(_epoch("svrg", 0, {}, None) | {"note": 1})
        w.epoch(_epoch("svrg", 1, {}, None) | {"note": "one"})
    with pytest.raises(TraceError, match="epoch records' 'note' values do not make one column"):
        TraceTables.read(path)


def test_export_errors_are_one_line(tmp_path):
    path = tmp_path / "trace.cosim"
    _write(path)
    r = cosim("trace", "export", str(path), "--format", "xlsx")
    assert r.returncode == 2 and r.stderr == "error: unknown format 'xlsx'; choose parquet or csv\n"
    (tmp_path / "taken").write_text("a file, not a directory")
    r = cosim("trace", "export", str(path), "--out", str(tmp_path / "taken"))
    assert r.returncode == 2 and r.stderr.startswith("error: cannot write the tables into")
    damaged = bytearray(path.read_bytes())
    damaged[-1] ^= 1
    path.write_bytes(damaged)
    r = cosim("trace", "export", str(path), "--out", str(tmp_path / "none"))
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "is damaged" in r.stderr
    assert "Traceback" not in r.stderr and not (tmp_path / "none").exists()   # nothing written
    r = cosim("trace", "export", "--help")
    assert r.returncode == 0 and "stamped_by" in r.stdout and "parquet or csv" in r.stdout
