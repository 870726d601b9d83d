"""``smdfs.compat.splitdataloader`` as splitdataloader's users call it: write_split_data then
len / index / bin-wise (shuffled) iteration, and MpQItr running a generator in a child
process."""

from __future__ import annotations

import os
import pickle
import random

import numpy as np
import pytest

from smdfs.compat.splitdataloader import MpQItr, SplitDataLoader, write_split_data


def records(n: int) -> list:
    return [pickle.dumps({"i": i, "x": np.full(i % 17, i, dtype=np.int32)}) for i in range(n)]


def test_write_then_len_index_and_shuffled_iteration(tmp_path):
    recs = records(1000)
    write_split_data(str(tmp_path / "d"), (r for r in recs), splits=128)
    loader = SplitDataLoader(str(tmp_path / "d"))
    assert len(loader) == 1000
    for i in [0, 1, 127, 128, 500, 999]:
        assert loader[i] == recs[i]
        assert pickle.loads(loader[i])["i"] == i
    with pytest.raises(IndexError):
        loader[1000]

    plain = list(loader.iterate_binwise(shuffle=False))
    assert plain[:3] == [recs[0], recs[128], recs[256]]  # bin 0 first, in order
    random.seed(7)
    a = list(loader.iterate_binwise(shuffle=True))
    random.seed(7)
    b = list(loader.iterate_binwise(shuffle=True))
    c = list(loader.iterate_binwise(shuffle=True))
    assert a == b and a != c and a != plain
    assert sorted(a) == sorted(recs)
    # Bin-wise: the records of one bin come together.
    bins = [pickle.loads(r)["i"] % 128 for r in a]
    assert sum(1 for x, y in zip(bins, bins[1:]) if x != y) == 127


def test_iteration_gives_exact_bytes_of_any_size_and_can_stop_anywhere(tmp_path):
    # Empty, one-byte (CPython caches those bytes objects) and multi-MiB records; the
    # iteration fills fresh bytes objects on a copier thread, one bin ahead.
    rng = np.random.default_rng(3)
    recs = [b"", b"x", b"y", bytes(rng.integers(0, 256, 3 << 20, dtype=np.uint8))]
    recs += [bytes(rng.integers(0, 256, int(n), dtype=np.uint8)) for n in rng.integers(0, 5000, 300)]
    write_split_data(str(tmp_path / "d"), recs, splits=7)
    loader = SplitDataLoader(str(tmp_path / "d"))
    got = list(loader.iterate_binwise(shuffle=True))
    assert all(type(r) is bytes for r in got)
    assert sorted(got) == sorted(recs)
    assert b"x" == loader[1] and b"" == loader[0]
    # Stopping early (the generator closed while the next bin is being filled) is clean.
    for stop in range(0, len(recs), 23):
        for k, _ in enumerate(loader.iterate_binwise(shuffle=True)):
            if k == stop:
                break
    assert sum(len(r) for r in loader.iterate_binwise()) == sum(len(r) for r in recs)


def test_data_source_keyword_start_clean_and_existing_dir(tmp_path):
    d = tmp_path / "d"
    write_split_data(d, data_source=[b"a", b"bb", b""], splits=2)
    assert [SplitDataLoader(d)[i] for i in range(3)] == [b"a", b"bb", b""]
    with pytest.raises(Exception, match="already holds split records"):
        write_split_data(d, [b"x"], splits=2)
    write_split_data(d, [b"x"], splits=2, start_clean=True)
    assert len(SplitDataLoader(d)) == 1
    with pytest.raises(TypeError, match="record 1 is a int"):
        write_split_data(tmp_path / "e", [b"ok", 5], splits=2)


def squares(n: int, offset: int = 0):
    for i in range(n):
        yield i * i + offset


def failing(n: int):
    yield 1
    raise ValueError("boom in the child")


def pid_of_producer():
    yield os.getpid()


def test_mpqitr_iterates_a_generator_in_another_process(tmp_path):
    assert list(MpQItr[int](squares, 500, offset=3)) == [i * i + 3 for i in range(500)]
    assert next(iter(MpQItr[int](pid_of_producer))) != os.getpid()
    with pytest.raises(RuntimeError, match="boom in the child"):
        list(MpQItr[int](failing, 3))
    recs = records(300)
    write_split_data(tmp_path / "d", recs, splits=8)
    loader = SplitDataLoader(tmp_path / "d")
    got = list(MpQItr[bytes](loader.iterate_binwise, shuffle=True))
    assert sorted(got) == sorted(recs)
