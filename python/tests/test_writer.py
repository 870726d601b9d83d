"""The writer in serial mode: every value type round-trips (read back with h5py from the
`filename=` export, and with the `smdfs` tool), schema errors leave the run readable and the
writer going, same-id merging, callbacks, reductions, threads, a SIGKILLed writer."""

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import h5py
import numpy as np
import pytest

import smdfs
from smdfs import SmallData

from conftest import HERE, PY, check_demo, datasets, run

DTYPES = ["bool", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64", "float32", "float64"]


def test_every_value_type_round_trips(tmp_path):
    h5 = tmp_path / "all.h5"
    smd = SmallData(filename=h5, servers=2, batch_size=7, ragged=["hits"])
    n = 40
    for i in range(n):
        fields = {}
        for dt in DTYPES:
            t = np.dtype(dt).type
            fields[f"s_{dt}"] = t(i % 2) if dt == "bool" else t(i)
            fields[f"a_{dt}"] = (np.arange(6).reshape(2, 3) + i).astype(dt)
        fields["nd"] = np.arange(24, dtype=np.float32).reshape(2, 3, 4) * i
        fields["strided"] = np.arange(12, dtype=np.int16).reshape(3, 4).T * i  # not C-contiguous
        fields["big_endian"] = np.arange(3, dtype=">u4") + i
        fields["zero_d"] = np.array(i * 2.5)
        smd.event(
            i,
            fields,
            py_float=i / 4,
            py_int=-(i**3),
            py_bool=i % 3 == 0,
            text=f"évt{i}",
            raw=bytes(range(i % 7)),
            var_e=np.arange(i % 5, dtype=np.float64),
            hits=np.arange(i % 3, dtype=np.uint16),
            det={"a": {"b": i}, "img": np.full((2, 2), i, dtype=np.uint8)},
        )
    smd.done()
    assert smd.events == n
    with h5py.File(h5, "r") as f:
        i = np.arange(n)
        for dt in DTYPES:
            s = f[f"s_{dt}"][:]
            assert s.dtype == np.dtype(dt), dt
            np.testing.assert_array_equal(s, (i % 2).astype(dt) if dt == "bool" else i.astype(dt))
            a = f[f"a_{dt}"][:]
            assert a.dtype == np.dtype(dt) and a.shape == (n, 2, 3), dt
            np.testing.assert_array_equal(a, (np.arange(6).reshape(2, 3) + i[:, None, None]).astype(dt))
        np.testing.assert_array_equal(f["nd"][:], np.arange(24, dtype=np.float32).reshape(2, 3, 4) * i[:, None, None, None])
        np.testing.assert_array_equal(f["strided"][:], np.arange(12, dtype=np.int16).reshape(3, 4).T * i[:, None, None])
        np.testing.assert_array_equal(f["big_endian"][:], np.arange(3, dtype=np.uint32) + i[:, None])
        np.testing.assert_array_equal(f["zero_d"][:], i * 2.5)
        np.testing.assert_array_equal(f["py_float"][:], i / 4)
        assert f["py_int"].dtype == np.int64 and f["py_bool"].dtype == np.bool_
        np.testing.assert_array_equal(f["py_int"][:], -(i**3))
        np.testing.assert_array_equal(f["py_bool"][:], i % 3 == 0)
        np.testing.assert_array_equal(f["det/a/b"][:], i)
        np.testing.assert_array_equal(f["det/img"][:, 1, 1], i.astype(np.uint8))

        def rows(name):
            flat, off = f[name][:], f[f"{name}_offsets"][:]
            return [flat[off[k] : off[k + 1]] for k in range(n)]

        assert [r.tobytes().decode() for r in rows("text")] == [f"évt{k}" for k in range(n)]
        assert [r.tobytes() for r in rows("raw")] == [bytes(range(k % 7)) for k in range(n)]
        assert f["var_e"].dtype == np.float64 and f["hits"].dtype == np.uint16
        for k, r in enumerate(rows("var_e")):
            np.testing.assert_array_equal(r, np.arange(k % 5))
        for k, r in enumerate(rows("hits")):
            np.testing.assert_array_equal(r, np.arange(k % 3))
        np.testing.assert_array_equal(f["hits_len"][:], i % 3)


def test_unaligned_align_group_fill_units_and_masks(tmp_path, smdfs_bin):
    h5 = tmp_path / "g.h5"
    smd = SmallData(filename=h5, unaligned=["rare"], fill={"gain": -1, "temp": 20.5}, units={"energy": "eV"})
    for i in range(10):
        smd.event(i, energy=float(i), gain=np.int32(i), temp=np.float32(i))
        if i % 3 == 0:
            smd.event(i, align_group="scan", motor=i * 10.0)
        if i % 4 == 0:
            smd.event(i, rare=np.uint8(i), unaligned_x=i)
    smd.event(10, energy=10.0)  # gain and temp missing: their fill values
    smd.done()
    with h5py.File(h5, "r") as f:
        assert f["energy"].attrs["units"] in (b"eV", "eV")
        np.testing.assert_array_equal(f["gain"][:], [*range(10), -1])
        assert f["gain"].dtype == np.int32
        np.testing.assert_array_equal(f["temp"][:], np.array([*range(10), 20.5], dtype=np.float32))
        np.testing.assert_array_equal(f["_present/gain"][:], [True] * 10 + [False])
        np.testing.assert_array_equal(f["scan/timestamp"][:], [0, 3, 6, 9])
        np.testing.assert_array_equal(f["scan/motor"][:], [0.0, 30.0, 60.0, 90.0])
        np.testing.assert_array_equal(f["rare_timestamp"][:], [0, 4, 8])
        np.testing.assert_array_equal(f["rare"][:], [0, 4, 8])
        np.testing.assert_array_equal(f["unaligned_x_timestamp"][:], [0, 4, 8])
        assert "motor" not in f and "scan/energy" not in f
    # A field is in one group: naming another for it later is an error naming both.
    smd = SmallData(tmp_path / "g2")
    smd.event(1, align_group="scan", motor=1.0)
    with pytest.raises(smdfs.SchemaError, match=r"motor.*scan.*other"):
        smd.event(2, align_group="other", motor=2.0)
    with pytest.raises(smdfs.SchemaError, match='fill value for field "small"'):
        SmallData(tmp_path / "g3", fill={"small": 300}).event(1, small=np.uint8(1))
    smd.done()


def test_same_id_calls_merge_and_a_field_twice_is_a_schema_error(tmp_path):
    h5 = tmp_path / "m.h5"
    smd = SmallData(filename=h5)
    smd.event(5, a=1.0)
    smd.event(5, {"b": 2})
    with pytest.raises(smdfs.SchemaError, match='"a".*given twice'):
        smd.event(5, a=3.0, c=1)  # rejected whole: c is not added either
    smd.event(5, c=3)
    smd.event(7, a=4.0)
    smd.event(5, a=5.0)  # the id comes back later: a second event with id 5
    smd.done()
    assert smd.duplicates == 1
    with h5py.File(h5, "r") as f:
        assert f["timestamp"][:].tolist() == [5, 5, 7]
        assert f["a"][:].tolist() == [1.0, 5.0, 4.0]
        assert f["b"][:].tolist() == [2, -99999, -99999]
        assert f["c"][:].tolist() == [3, -99999, -99999]


def test_schema_error_names_field_expected_given_and_the_run_stays_readable(tmp_path, smdfs_bin):
    d = tmp_path / "bad"
    smd = SmallData(d, batch_size=10)
    for i in range(25):
        smd.event(i, x=float(i), img=np.zeros((2, 2), np.uint8))
    cases = [
        (dict(x=np.float32(1)), ['"x"', "f64 scalar", "f32 scalar"]),
        (dict(img=np.zeros((3, 2), np.uint8)), ['"img"', "[2, 2]", "[3, 2]"]),
        (dict(x="text"), ['"x"', "f64 scalar", "str"]),
        (dict(z=np.complex64(1)), ['"z"', "complex"]),
        (dict(z=None), ['"z"', "None"]),
        (dict(z=object()), ['"z"', "object"]),
    ]
    for fields, words in cases:
        with pytest.raises(smdfs.SchemaError) as e:
            smd.event(100, **fields)
        for w in words:
            assert w in str(e.value), (w, str(e.value))
    assert issubclass(smdfs.SchemaError, smdfs.Error)
    for i in range(25, 50):  # the writer goes on
        smd.event(i, x=float(i), img=np.zeros((2, 2), np.uint8))
    smd.done()
    out = subprocess.run([smdfs_bin, "verify", d], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
    subprocess.run([smdfs_bin, "export", d, tmp_path / "bad.h5"], check=True, capture_output=True)
    with h5py.File(tmp_path / "bad.h5", "r") as f:
        np.testing.assert_array_equal(f["timestamp"][:], np.arange(50))
        np.testing.assert_array_equal(f["x"][:], np.arange(50.0))


def test_callbacks_get_each_event_as_a_dict_with_timestamp(tmp_path):
    seen = []
    smd = SmallData(tmp_path / "cb", callbacks=[seen.append])
    smd.event(1, a=1, det={"x": 2})
    smd.event(1, b="t")
    smd.event(2, a=3)
    smd.done()
    assert seen == [{"a": 1, "det": {"x": 2}, "b": "t", "timestamp": 1}, {"a": 3, "timestamp": 2}]


def test_reductions_and_summary_in_serial_mode(tmp_path):
    h5 = tmp_path / "s.h5"
    smd = SmallData(filename=h5)
    smd.event(1, a=1)
    assert smd.summary and smd.is_client and not smd.mpi
    assert smd.sum(3) == 3 and isinstance(smd.sum(3), int)
    assert smd.max(2.5) == 2.5 and smd.min(-1) == -1 and smd.prod(4) == 4
    np.testing.assert_array_equal(smd.sum(np.arange(3)), np.arange(3))
    smd.save_summary(n=smd.sum(7), hist=np.arange(4, dtype=np.uint32), info={"name": "run 1"})
    smd.done()
    with h5py.File(h5, "r") as f:
        assert f["summary/n"][()] == 7
        np.testing.assert_array_equal(f["summary/hist"][()], np.arange(4))
        assert "name" in f["summary/info"]


def test_event_batch_writes_the_same_run_as_an_event_loop(tmp_path):
    run([HERE / "demo_writer.py", tmp_path / "loop.h5", 300, 2])
    run([HERE / "demo_writer.py", tmp_path / "batch.h5", 300, 2, "--batch"])
    check_demo(tmp_path / "batch.h5", 300)
    a, b = datasets(tmp_path / "loop.h5"), datasets(tmp_path / "batch.h5")
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)
    smd = SmallData(tmp_path / "e")
    with pytest.raises(smdfs.SchemaError, match='column "x" has 2 rows, ts has 3'):
        smd.event_batch([1, 2, 3], x=np.zeros(2))
    smd.done()


def test_timestamps_may_be_objects_with_a_timestamp(tmp_path):
    class Evt:
        def __init__(self, t):
            self.timestamp = t

    h5 = tmp_path / "t.h5"
    smd = SmallData(filename=h5)
    for t in (10, 20):
        smd.event(Evt(t), x=t)
    smd.event(np.uint64(30), x=30)
    with pytest.raises(TypeError, match="event id"):
        smd.event(-1, x=1)
    smd.done()
    with h5py.File(h5, "r") as f:
        assert f["timestamp"][:].tolist() == [10, 20, 30]


def test_an_existing_run_is_refused_unless_overwrite(tmp_path):
    SmallData(tmp_path / "r").done()
    with pytest.raises(smdfs.RunExistsError, match="overwrite=True"):
        SmallData(tmp_path / "r")
    SmallData(tmp_path / "r", overwrite=True).done()


def test_python_threads_each_with_a_client(tmp_path):
    h5 = tmp_path / "th.h5"
    smd = SmallData(filename=h5, servers=2, batch_size=50)
    errors = []

    def work(k):
        try:
            with smd.client() as c:
                for i in range(k, 2000, 4):
                    c.event(i, x=np.float64(i), v=np.full(16, i, np.int32))
        except Exception as e:  # noqa: BLE001
            errors.append(e)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    smd.done()
    with h5py.File(h5, "r") as f:
        np.testing.assert_array_equal(f["timestamp"][:], np.arange(2000))
        np.testing.assert_array_equal(f["x"][:], np.arange(2000.0))
        np.testing.assert_array_equal(f["v"][:, 7], np.arange(2000))


KILLED = """
import sys, numpy as np
from smdfs import SmallData
smd = SmallData(sys.argv[1], servers=2, batch_size=100)
i = 0
while True:
    smd.event(1000 + 3 * i, energy=i * 0.5, count=-i, tag=b"evt%d" % i)
    i += 1
    if i == 5000:
        print("flushed", flush=True)
"""


def test_a_sigkilled_writer_leaves_a_committed_prefix(tmp_path, smdfs_bin):
    d = tmp_path / "killed"
    script = tmp_path / "killed.py"
    script.write_text(KILLED)
    p = subprocess.Popen([PY, script, d], stdout=subprocess.PIPE, text=True)
    try:
        assert p.stdout.readline().strip() == "flushed"
        time.sleep(0.3)
    finally:
        p.send_signal(signal.SIGKILL)
        p.wait(timeout=30)
    out = subprocess.run([smdfs_bin, "verify", d], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
    subprocess.run([smdfs_bin, "export", d, tmp_path / "k.h5"], check=True, capture_output=True)
    with h5py.File(tmp_path / "k.h5", "r") as f:
        ts = f["timestamp"][:].astype(np.int64)
        i = (ts - 1000) // 3
        assert len(ts) >= 4000, len(ts)
        np.testing.assert_array_equal(f["energy"][:], i * 0.5)
        np.testing.assert_array_equal(f["count"][:], -i)


FORKED = """
import os, sys, time
from smdfs import SmallData
smd = SmallData(sys.argv[1], servers=2, batch_size=100)
child = os.fork()  # a worker forked without exec (multiprocessing's "fork" start method)
if child == 0:
    time.sleep(60)
    os._exit(0)
for i in range(5000):
    smd.event(i, energy=i * 0.5)
print(child, flush=True)
while True:
    smd.event(5000 + i, energy=0.0)
    i += 1
"""


def test_a_forked_child_does_not_keep_a_killed_writer_s_run_writing(tmp_path, smdfs_bin):
    d = tmp_path / "forked"
    script = tmp_path / "forked.py"
    script.write_text(FORKED)
    p = subprocess.Popen([PY, script, d], stdout=subprocess.PIPE, text=True)
    child = None
    try:
        child = int(p.stdout.readline())
        time.sleep(0.3)
        p.send_signal(signal.SIGKILL)
        p.wait(timeout=30)
        # The forked child still lives; the run is no longer being written.
        os.kill(child, 0)
        info = subprocess.run([smdfs_bin, "info", d], capture_output=True, text=True)
        state = [line.split()[1] for line in info.stdout.splitlines() if line.startswith("state")]
        assert state and state[0] != "writing", info.stdout + info.stderr
        # And a new writer may replace it.
        smd = SmallData(str(d), servers=1, overwrite=True)
        smd.event(1, energy=1.0)
        smd.done()
    finally:
        if p.poll() is None:
            p.kill()
        if child is not None:
            try:
                os.kill(child, signal.SIGKILL)
            except ProcessLookupError:
                pass
    with smdfs.open(str(d)) as r:
        assert len(r) == 1


CHILD_WRITES = """
import os, sys
import smdfs
from smdfs import SmallData
smd = SmallData(sys.argv[1], servers=2, batch_size=10)
for i in range(100):
    smd.event(2 * i, energy=float(i))
child = os.fork()
if child == 0:
    try:
        for i in range(10000):
            smd.event(2 * i + 1, energy=-1.0)
        print("child wrote", flush=True)
    except smdfs.Error as e:
        print("child refused:", e, flush=True)
    sys.exit(0)  # a normal exit: the writer's copy is dropped in the child
os.waitpid(child, 0)
for i in range(100, 200):
    smd.event(2 * i, energy=float(i))
smd.done()
print("parent done", flush=True)
"""


def test_a_forked_child_writing_through_the_parent_s_writer_gets_a_typed_error(tmp_path):
    d = tmp_path / "child_writes"
    script = tmp_path / "child_writes.py"
    script.write_text(CHILD_WRITES)
    out = subprocess.run([PY, script, d], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr
    lines = out.stdout.splitlines()
    assert lines[0].startswith("child refused: this writer was started in process"), out.stdout
    assert "start a writer in each process" in lines[0]
    assert lines[1] == "parent done", out.stdout
    with smdfs.open(str(d)) as r:
        np.testing.assert_array_equal(r["energy"][:], np.arange(200.0))


CHILD_READS = """
import os, sys
import smdfs
from smdfs.compat.splitdataloader import SplitDataLoader, write_split_data
run = smdfs.open(sys.argv[1])
batches = run.iter_batches(["energy"], batch_size=100, shuffle=False)
next(batches)
write_split_data(sys.argv[2], (bytes([i % 256]) * 8 for i in range(400)), splits=4)
records = SplitDataLoader(sys.argv[2]).iterate_binwise(shuffle=True)
next(records)
child = os.fork()
if child == 0:
    for name, it in (("batches", batches), ("records", records)):
        try:
            for _ in it:
                pass
            print(name, "ran out", flush=True)
        except smdfs.Error as e:
            print(name, "refused:", e, flush=True)
    sys.exit(0)
os.waitpid(child, 0)
print("parent", sum(len(b["energy"]) for b in batches) + 100, sum(1 for _ in records) + 1, flush=True)
"""


def test_readers_with_threads_refuse_in_a_forked_child_and_go_on_in_the_parent(tmp_path):
    d = tmp_path / "run"
    with SmallData(str(d), servers=2, batch_size=50) as smd:
        for i in range(1000):
            smd.event(i, energy=float(i))
    script = tmp_path / "child_reads.py"
    script.write_text(CHILD_READS)
    out = subprocess.run([PY, script, d, tmp_path / "split"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr
    lines = out.stdout.splitlines()
    assert lines[0].startswith("batches refused: this batch reader was started in process"), out.stdout
    assert lines[1].startswith("records refused: this split-records bin iterator was started"), out.stdout
    assert lines[2] == "parent 1000 400", out.stdout


def test_help_and_docstrings():
    import pydoc

    text = pydoc.render_doc(SmallData, renderer=pydoc.plaintext)
    for name in ["event", "event_batch", "round_robin", "block", "summary", "sum", "save_summary", "done", "client"]:
        assert name in text
        assert getattr(SmallData, name).__doc__, name
    for name in ["event", "flush", "close"]:
        assert getattr(smdfs.Client, name).__doc__, name
    assert "filename" in SmallData.__doc__


def test_the_demo_mix_in_serial_mode(tmp_path):
    run([HERE / "demo_writer.py", tmp_path / "demo.h5", 500, 2])
    check_demo(tmp_path / "demo.h5", 500)


def test_long_names_and_attributes_reach_the_file_and_reserved_names_are_refused(tmp_path):
    h5 = tmp_path / "a.h5"
    smd = SmallData(
        filename=h5,
        units={"energy": "eV"},
        long_name={"energy": "photon energy", "det/image": "detector frame"},
        attrs={"energy": {"source": "undulator"}},
    )
    for i in range(5):
        smd.event(i, energy=float(i), det={"image": np.zeros((2, 3), np.uint16)})
    smd.done()
    text = lambda v: v.decode() if isinstance(v, bytes) else v  # noqa: E731
    with h5py.File(h5, "r") as f:
        assert text(f["energy"].attrs["long_name"]) == "photon energy"
        assert text(f["energy"].attrs["source"]) == "undulator"
        assert text(f["energy"].attrs["units"]) == "eV"
        assert text(f["det/image"].attrs["long_name"]) == "detector frame"
    with pytest.raises(smdfs.SchemaError, match=r"energy.*_FillValue.*set by smdfs"):
        SmallData(tmp_path / "bad", attrs={"energy": {"_FillValue": "0"}})


def test_event_batch_columns_of_every_kind_out_of_order_and_a_refused_column(tmp_path):
    # Whole columns go to the crate's batch API (one copy per column, GIL released): every
    # dtype, n-d arrays, ragged arrays, bytes, text and masked columns, ids out of order,
    # split over several batches; a refused call keeps what was written before.
    h5 = tmp_path / "cols.h5"
    smd = SmallData(filename=h5, servers=2, batch_size=16, ragged=["hits", "pairs"])
    n = 100
    order = np.random.default_rng(7).permutation(n)
    for part in np.array_split(order, 3):
        i = part.astype(np.int64)
        cols = {f"s_{dt}": (i % 2 if dt == "bool" else i).astype(dt) for dt in DTYPES}
        cols["img"] = (np.arange(6).reshape(1, 2, 3) + i[:, None, None]).astype(np.uint16)
        cols["hits"] = [np.arange(k % 4, dtype=np.float32) + k for k in i]
        cols["raw"] = [bytes(range(k % 5)) for k in i]
        cols["text"] = [f"évt{k}" for k in i]
        cols["maybe"] = np.ma.masked_array(i.astype(np.float64), mask=i % 2 != 0)
        # Masked columns that take the per-row path (not native byte order; a ragged field).
        cols["swapped"] = np.ma.masked_array(i.astype(">f8"), mask=i % 3 == 0)
        pairs = np.stack([i, i + 1], axis=1).astype(np.int32)
        cols["pairs"] = np.ma.masked_array(pairs, mask=np.repeat((i % 4 == 1)[:, None], 2, axis=1))
        smd.event_batch(1000 + i, **cols)
    with pytest.raises(smdfs.SchemaError, match="s_float64"):
        smd.event_batch([5000, 5001], s_float64=np.zeros(2, dtype=np.float32))
    smd.done()
    assert smd.events == n
    with h5py.File(h5, "r") as f:
        i = np.arange(n)
        np.testing.assert_array_equal(f["timestamp"][:], 1000 + i)
        for dt in DTYPES:
            np.testing.assert_array_equal(f[f"s_{dt}"][:], (i % 2 if dt == "bool" else i).astype(dt), err_msg=dt)
        np.testing.assert_array_equal(f["img"][:], (np.arange(6).reshape(1, 2, 3) + i[:, None, None]).astype(np.uint16))
        off, flat = f["hits_offsets"][:], f["hits"][:]
        for k in range(n):
            np.testing.assert_array_equal(flat[off[k] : off[k + 1]], np.arange(k % 4, dtype=np.float32) + k)
        off, flat = f["raw_offsets"][:], f["raw"][:]
        assert [bytes(flat[off[k] : off[k + 1]]) for k in range(n)] == [bytes(range(k % 5)) for k in range(n)]
        off, flat = f["text_offsets"][:], f["text"][:]
        assert [bytes(flat[off[k] : off[k + 1]]).decode() for k in range(n)] == [f"évt{k}" for k in range(n)]
        m = f["maybe"][:]
        np.testing.assert_array_equal(m[::2], i[::2].astype(np.float64))
        assert np.isnan(m[1::2]).all()
        sw, present = f["swapped"][:], f["_present/swapped"][:]
        np.testing.assert_array_equal(present, i % 3 != 0)
        np.testing.assert_array_equal(sw[i % 3 != 0], i[i % 3 != 0].astype(np.float64))
        off, flat = f["pairs_offsets"][:], f["pairs"][:]
        np.testing.assert_array_equal(f["_present/pairs"][:], i % 4 != 1)
        for k in range(n):
            want = [] if k % 4 == 1 else [k, k + 1]
            np.testing.assert_array_equal(flat[off[k] : off[k + 1]], want, err_msg=f"pairs row {k}")
