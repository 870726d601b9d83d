"""Shared helpers of the Python tests: run a script serially or under a real ``mpirun``
(always with a timeout, so a hang fails the test), the `smdfs` binary, and the demo formula."""

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import h5py
import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
PY = sys.executable
TIMEOUT = 180


def mpi_env():
    """The environment for mpirun'd scripts: mpi4py's PyPI wheel finds MPICH as libmpi.so.12."""
    env = dict(os.environ)
    abi = REPO / ".venv" / "mpich-abi"
    if abi.is_dir():
        env["LD_LIBRARY_PATH"] = f"{abi}:{env.get('LD_LIBRARY_PATH', '')}"
    return env


def run(args, ranks=None, check=True, timeout=TIMEOUT, cwd=None):
    """Runs `python ARGS...` (under `mpirun -n RANKS` if given); returns the CompletedProcess."""
    cmd = [PY, *map(str, args)]
    if ranks is not None:
        cmd = ["mpirun", "-n", str(ranks), *cmd]
    # Files, not pipes: output a launcher forwards after a rank aborted still arrives.
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        rc = subprocess.run(cmd, stdout=out, stderr=err, text=True, timeout=timeout, env=mpi_env(), cwd=cwd).returncode
        out.seek(0)
        err.seek(0)
        p = subprocess.CompletedProcess(cmd, rc, out.read(), err.read())
    if check and p.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({p.returncode}):\n{p.stdout}\n{p.stderr}")
    return p


@pytest.fixture(scope="session")
def smdfs_bin():
    """The `smdfs` command-line tool: one lookup for every test (test_reader_demo.smdfs_bin)."""
    from test_reader_demo import smdfs_bin as find

    return find()


@pytest.fixture(scope="session")
def mpirun():
    if shutil.which("mpirun") is None:
        pytest.skip("mpirun (MPICH) is not installed: run scripts/setup.sh")
    return "mpirun"


def check_demo(path, n):
    """Every value of an exported demo run of `n` events against the DESIGN.md formula."""
    with h5py.File(path, "r") as f:
        i = np.arange(n)
        assert f["timestamp"][:].tolist() == (1000 + 3 * i).tolist()
        np.testing.assert_array_equal(f["energy"][:], i * 0.5)
        np.testing.assert_array_equal(f["count"][:], -i)
        img = f["det/image"][:]
        assert img.dtype == np.uint16 and img.shape == (n, 4, 8)
        np.testing.assert_array_equal(img, (i[:, None, None] + 8 * np.arange(4)[:, None] + np.arange(8)) % 65536)
        maybe = f["maybe"][:]
        assert maybe.dtype == np.float32
        np.testing.assert_array_equal(maybe[::2], i[::2].astype(np.float32))
        assert np.isnan(maybe[1::2]).all()
        np.testing.assert_array_equal(f["_present/maybe"][:], i % 2 == 0)
        np.testing.assert_array_equal(f["unaligned_hits"][:], i[i % 5 == 0])
        np.testing.assert_array_equal(f["unaligned_hits_timestamp"][:], 1000 + 3 * i[i % 5 == 0])
        flat, off = f["tag"][:].tobytes(), f["tag_offsets"][:]
        assert [flat[off[k] : off[k + 1]] for k in range(n)] == [b"evt%d" % k for k in range(n)]
        assert f["summary/n_events"][()] == n
        assert f["summary/max_energy"][()] == (n - 1) * 0.5


def datasets(path):
    """{name: array} of every dataset of an HDF5 file."""
    out = {}
    with h5py.File(path, "r") as f:
        f.visititems(lambda name, obj: out.__setitem__(name, obj[()]) if isinstance(obj, h5py.Dataset) else None)
    return out
