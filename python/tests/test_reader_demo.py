"""Shared by the reader and xarray tests: writing demo runs with the real ``smdfs`` binary and
the demo formula of DESIGN.md ("Demo run") every value is checked against. No tests here.

For i in 0..N: event id ``1000 + 3*i``; ``energy`` f64 ``i*0.5``; ``det/image`` u16 [4, 8]
``(i + 8r + c) % 65536``; ``count`` i64 ``-i``; ``maybe`` f32 ``i`` where ``i % 2 == 0``
(NaN and a False mask elsewhere); ``unaligned_hits`` u32 ``i`` only where ``i % 5 == 0`` (its
own group); ``tag`` bytes ``evt{i}``; summary ``n_events`` = N, ``max_energy`` = (N-1)/2.
"""

from __future__ import annotations

import os
import pathlib
import shutil
import subprocess

import numpy as np
import pytest

REPO = pathlib.Path(__file__).resolve().parents[2]


def smdfs_bin() -> str:
    """The ``smdfs`` binary: ``$SMDFS_BIN``, else the workspace's release build."""
    b = os.environ.get("SMDFS_BIN") or str(REPO / "target" / "release" / "smdfs")
    if not os.access(b, os.X_OK):
        pytest.fail(f"the smdfs binary is missing at {b}: run `cargo build --release -p smdfs-cli` "
                    "(or set SMDFS_BIN)")
    return b


def write_demo(out: pathlib.Path, events: int, servers: int, clients: int) -> pathlib.Path:
    """Writes the demo run with the real binary."""
    if out.exists():
        shutil.rmtree(out)
    subprocess.run([smdfs_bin(), "demo", str(out), "--events", str(events), "--servers", str(servers),
                    "--clients", str(clients)], check=True, capture_output=True)
    return out


def demo_i(ids) -> np.ndarray:
    """Demo event numbers of event ids (which must be demo ids)."""
    ids = np.asarray(ids, dtype=np.int64)
    assert np.all(ids >= 1000) and np.all((ids - 1000) % 3 == 0), ids[:20]
    return (ids - 1000) // 3


def image(i) -> np.ndarray:
    """``det/image`` of demo events ``i`` (array of event numbers)."""
    i = np.asarray(i, dtype=np.int64)
    r = np.arange(4)[None, :, None]
    c = np.arange(8)[None, None, :]
    return ((i[:, None, None] + 8 * r + c) % 65536).astype("<u2")


def expected(n: int) -> dict:
    """Every dataset of an N-event demo run, by name, as the reader must return it (ragged
    ``tag`` as a list of bytes)."""
    i = np.arange(n, dtype=np.int64)
    h = i[i % 5 == 0]
    tags = [f"evt{k}".encode() for k in range(n)]
    lens = np.array([len(t) for t in tags], dtype=np.uint64)
    return {
        "timestamp": (1000 + 3 * i).astype(np.uint64),
        "unaligned_hits_timestamp": (1000 + 3 * h).astype(np.uint64),
        "energy": i * 0.5,
        "det/image": image(i),
        "count": -i,
        "tag": tags,
        "tag_len": lens,
        "tag_offsets": np.concatenate([[0], np.cumsum(lens)]).astype(np.uint64),
        "maybe": np.where(i % 2 == 0, i.astype(np.float32), np.float32(np.nan)).astype(np.float32),
        "_present/maybe": i % 2 == 0,
        "unaligned_hits": h.astype(np.uint32),
        "summary/n_events": np.uint64(n),
        "summary/max_energy": np.float64((n - 1) * 0.5),
    }


def assert_equal(name: str, got, want) -> None:
    """Exact equality (NaN equal to NaN), dtype and shape included."""
    if isinstance(want, list):
        assert list(got) == want, f"{name}: {list(got)[:5]} != {want[:5]}"
        return
    got, want = np.asarray(got), np.asarray(want)
    assert got.dtype == want.dtype, f"{name}: dtype {got.dtype} != {want.dtype}"
    assert got.shape == want.shape, f"{name}: shape {got.shape} != {want.shape}"
    assert np.array_equal(got, want, equal_nan=got.dtype.kind == "f"), f"{name}: values differ"


def check_demo_rows(run) -> int:
    """Checks a (possibly partial: crashed or writing) demo run: ids are demo ids, ascending,
    and every value of every dataset is the formula's for its id. Returns the event count."""
    i = demo_i(run.timestamp)
    assert np.all(np.diff(i) > 0)
    assert_equal("energy", run["energy"][:], i * 0.5)
    assert_equal("det/image", run["det/image"][:], image(i))
    assert_equal("count", run["count"][:], -i)
    assert run["tag"][:] == [f"evt{k}".encode() for k in i]
    m = run["maybe"]
    assert_equal("maybe.present", m.present[:], i % 2 == 0)
    assert_equal("maybe", m[:], np.where(i % 2 == 0, i.astype(np.float32), np.float32(np.nan)).astype(np.float32))
    h = demo_i(run["unaligned_hits_timestamp"][:])
    assert np.all(h % 5 == 0)
    assert_equal("unaligned_hits", run["unaligned_hits"][:], h.astype(np.uint32))
    return len(i)


@pytest.fixture(scope="session")
def demo_runs(tmp_path_factory) -> dict:
    """Demo runs by (servers, clients): one shard (rows contiguous, zero-copy), two and three
    shards dealt round-robin (gathered), and a large one that takes the parallel gather."""
    base = tmp_path_factory.mktemp("demo")
    runs = {}
    for n, s, c in [(1000, 1, 1), (1000, 2, 3), (997, 3, 5), (150_000, 2, 4)]:
        runs[(n, s, c)] = write_demo(base / f"n{n}-s{s}-c{c}", n, s, c)
    return runs
