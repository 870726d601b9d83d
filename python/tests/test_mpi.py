"""The writer under a real `mpirun` (MPICH): the same data as serial mode for P ranks and S
servers, with or without mpi4py imported first, smalldata-style scripts with client-only
reductions, and a failing rank that fails the job (never a hang: every run has a timeout)."""

import subprocess
import time

import numpy as np
import pytest

import smdfs

from conftest import HERE, check_demo, datasets, run

N = 203


@pytest.fixture(scope="module")
def serial(tmp_path_factory):
    out = tmp_path_factory.mktemp("serial") / "demo.h5"
    run([HERE / "demo_writer.py", out, N, 2])
    check_demo(out, N)
    return datasets(out)


@pytest.mark.parametrize("ranks,servers", [(2, 1), (4, 1), (4, 2), (5, 1), (5, 2)])
def test_mpirun_gives_the_same_data_as_serial_mode(tmp_path, mpirun, serial, ranks, servers):
    out = tmp_path / "demo.h5"
    run([HERE / "demo_writer.py", out, N, servers], ranks=ranks)
    got = datasets(out)
    assert got.keys() == serial.keys()
    for k in serial:
        np.testing.assert_array_equal(got[k], serial[k], err_msg=k)


def test_a_script_that_imported_mpi4py_first_works(tmp_path, mpirun, serial):
    out = tmp_path / "demo.h5"
    run([HERE / "demo_writer.py", out, N, 1, "--mpi4py", "--batch"], ranks=3)
    got = datasets(out)
    for k in serial:
        np.testing.assert_array_equal(got[k], serial[k], err_msg=k)


SMALLDATA_STYLE = """
import sys
import numpy as np
from smdfs import SmallData

n = int(sys.argv[2])
smd = SmallData(filename=sys.argv[1], servers=2, batch_size=16)
hist = np.zeros(4, dtype=np.int64)
count = 0
for i in smd.round_robin(range(n)):
    det = {"sum": np.float32(i) * 2, "roi": np.full((3, 2), i, dtype=np.int16)}
    smd.event(10 * i, mydata=i * 1.5, det=det)
    if i % 3 == 0:
        smd.event(10 * i, {"unaligned_laser": np.uint8(i % 256)})
    smd.event(10 * i, var_peaks=np.arange(i % 4, dtype=np.float64), align_group="peaks")
    hist[i % 4] += 1
    count += 1
if smd.summary:
    smd.save_summary(
        n_events=smd.sum(count), n_workers=smd.sum(1), hist=smd.sum(hist),
        lo=smd.min(np.array([count, -count])), prod=smd.prod(2),
    )
smd.done()
# One write per line: with PYTHONUNBUFFERED a multi-argument print writes each piece
# separately, and mpirun interleaves the ranks' pieces.
sys.stdout.write(f"rank {smd.rank} done {smd.events}\\n")
"""


def check_smalldata_style(path, n, clients):
    import h5py

    with h5py.File(path, "r") as f:
        i = np.arange(n)
        np.testing.assert_array_equal(f["timestamp"][:], 10 * i)
        np.testing.assert_array_equal(f["mydata"][:], i * 1.5)
        np.testing.assert_array_equal(f["det/sum"][:], i.astype(np.float32) * 2)
        np.testing.assert_array_equal(f["det/roi"][:, 2, 1], i)
        np.testing.assert_array_equal(f["unaligned_laser"][:], i[i % 3 == 0] % 256)
        np.testing.assert_array_equal(f["peaks/timestamp"][:], 10 * i)
        flat, off = f["peaks/var_peaks"][:], f["peaks/var_peaks_offsets"][:]
        for k in range(n):
            np.testing.assert_array_equal(flat[off[k] : off[k + 1]], np.arange(k % 4))
        assert f["summary/n_events"][()] == n
        assert f["summary/n_workers"][()] == clients
        np.testing.assert_array_equal(f["summary/hist"][()], np.bincount(i % 4, minlength=4))
        counts = [len(range(k, n, clients)) for k in range(clients)]
        np.testing.assert_array_equal(f["summary/lo"][()], [min(counts), -max(counts)])
        assert f["summary/prod"][()] == 2**clients


@pytest.mark.parametrize("ranks", [None, 6])
def test_a_smalldata_style_script(tmp_path, mpirun, smdfs_bin, ranks):
    script = tmp_path / "sd.py"
    script.write_text(SMALLDATA_STYLE)
    out = tmp_path / "my.h5"
    p = run([script, out, 301], ranks=ranks)
    clients = 1 if ranks is None else ranks - 2
    assert p.stdout.count("done 301") == (ranks or 1)
    check_smalldata_style(out, 301, clients)
    run_dir = tmp_path / "my.smd"
    assert run_dir.is_dir()
    # The same run through a real mount: run.h5 reads like the exported file.
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    subprocess.run([smdfs_bin, "mount", run_dir, mnt], check=True, capture_output=True, timeout=60)
    try:
        check_smalldata_style(mnt / "run.h5", 301, clients)
    finally:
        for _ in range(50):
            if subprocess.run([smdfs_bin, "umount", mnt], capture_output=True).returncode == 0:
                break
            time.sleep(0.1)
        else:
            pytest.fail(f"{mnt} stays mounted")
    # And through the reader, with no mount.
    i = np.arange(301)
    with smdfs.open(run_dir) as r:
        assert len(r) == 301 and r.state == "complete"
        np.testing.assert_array_equal(r.timestamp, 10 * i)
        np.testing.assert_array_equal(r["mydata"][:], i * 1.5)
        np.testing.assert_array_equal(r["det/roi"][:, 2, 1], i)
        assert r.summary["n_events"] == 301 and r.summary["n_workers"] == clients
        np.testing.assert_array_equal(r.summary["hist"], np.bincount(i % 4, minlength=4))
        assert [r["peaks/var_peaks"][k].tolist() for k in (0, 5, 7)] == [[], [0.0], [0.0, 1.0, 2.0]]


FAILING = """
import sys
import numpy as np
from smdfs import SmallData

smd = SmallData(sys.argv[1], servers=1)
for i in smd.round_robin(range(100)):
    smd.event(i, x=float(i))
    if smd.rank == 1 and i > 50:
        raise RuntimeError("rank one gives up")
if smd.summary:
    smd.save_summary(n=smd.sum(1))
smd.done()
"""


def test_a_failing_rank_fails_the_job_with_its_message(tmp_path, mpirun):
    script = tmp_path / "fail.py"
    script.write_text(FAILING)
    p = run([script, tmp_path / "out"], ranks=4, check=False, timeout=120)
    assert p.returncode != 0
    assert "rank one gives up" in p.stderr


def test_clients_is_checked_against_the_ranks(tmp_path, mpirun):
    script = tmp_path / "c.py"
    script.write_text("import sys\nfrom smdfs import SmallData\nSmallData(sys.argv[1], servers=1, clients=5).done()\n")
    p = run([script, tmp_path / "out"], ranks=3, check=False, timeout=120)
    assert p.returncode != 0 and "clients=5" in p.stderr
    run([script, tmp_path / "serial"])  # ignored in serial mode
