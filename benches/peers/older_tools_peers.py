"""Python peers of benches/older_tools_bench.rs: the PyPI packages `splitdataloader` (split
records) and `bigarray` (named slices of one memory-mapped array), timed on the very data the
Rust side uses (the benchmark writes it to files and passes their paths).

Usage (the benchmark runs these; each prints `key value` lines):
  older_tools_peers.py split --src RAW --lens LENS_U32 --lookups IDX_U64 --dir DIR --splits N --seed S
  older_tools_peers.py bigarray --path FILE --names M --rows-per-name R --cols C
"""

import argparse
import os
import random
import sys
import time


def split(a):
    import numpy as np
    from splitdataloader import MpQItr, SplitDataLoader, write_split_data

    with open(a.src, "rb") as f:
        blob = f.read()
    lens = np.fromfile(a.lens, dtype="<u4").tolist()
    offs = [0] * (len(lens) + 1)
    for i, n in enumerate(lens):
        offs[i + 1] = offs[i] + n
    records = (blob[offs[i]:offs[i + 1]] for i in range(len(lens)))

    t = time.perf_counter()
    write_split_data(a.dir, records, splits=a.splits)
    print("write_s", time.perf_counter() - t)

    loader = SplitDataLoader(a.dir)
    assert len(loader) == len(lens), (len(loader), len(lens))
    lookups = np.fromfile(a.lookups, dtype="<u8").tolist()
    total = 0
    t = time.perf_counter()
    for i in lookups:
        total += len(loader[i])
    print("random_s", time.perf_counter() - t)
    print("random_n", len(lookups))
    print("random_bytes", total)

    random.seed(a.seed)
    n = total = 0
    t = time.perf_counter()
    for d in loader.iterate_binwise(shuffle=True):
        n += 1
        total += len(d)
    print("shuffled_s", time.perf_counter() - t)
    print("shuffled_n", n)
    print("shuffled_bytes", total)

    # The package's background loader: the iterator runs in a child process and hands
    # records over through a bounded multiprocessing queue (16 items).
    random.seed(a.seed)
    n = total = 0
    t = time.perf_counter()
    for d in MpQItr(loader.iterate_binwise, shuffle=True):
        n += 1
        total += len(d)
    print("prefetch_s", time.perf_counter() - t)
    print("prefetch_n", n)
    print("prefetch_bytes", total)


def bigarray(a):
    import numpy as np
    from bigarray import PointerArray, PointerArrayWriter

    total = a.names * a.rows_per_name
    data = np.arange(total * a.cols, dtype=np.float64).astype(np.float32).reshape(total, a.cols)
    names = ["n%d" % i for i in range(a.names)]

    # Per-name writes at given positions, into a writer created at full size.
    t = time.perf_counter()
    w = PointerArrayWriter(a.path, shape=(total, a.cols), dtype="float32", remove_exist=True)
    for i, name in enumerate(names):
        s = i * a.rows_per_name
        w.write({name: data[s:s + a.rows_per_name]}, start_position=s)
    print("write_s", time.perf_counter() - t)
    t = time.perf_counter()
    w.close()  # flush: msync of the map, then the pickled index appended
    print("close_s", time.perf_counter() - t)

    t = time.perf_counter()
    x = PointerArray(a.path, mode="r")
    acc = 0.0
    rows = 0
    for name in x.indices:
        s = x[name]
        rows += s.shape[0]
        acc += float(s.sum())
    print("iterate_s", time.perf_counter() - t)
    print("iterate_names", len(x.indices))
    print("iterate_rows", rows)
    print("iterate_sum", acc)
    del x
    os.remove(a.path)


def main():
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("split")
    s.add_argument("--src", required=True)
    s.add_argument("--lens", required=True)
    s.add_argument("--lookups", required=True)
    s.add_argument("--dir", required=True)
    s.add_argument("--splits", type=int, required=True)
    s.add_argument("--seed", type=int, default=42)
    b = sub.add_parser("bigarray")
    b.add_argument("--path", required=True)
    b.add_argument("--names", type=int, required=True)
    b.add_argument("--rows-per-name", type=int, required=True)
    b.add_argument("--cols", type=int, required=True)
    a = p.parse_args()
    try:
        {"split": split, "bigarray": bigarray}[a.cmd](a)
    except ImportError as e:
        print("missing", e, file=sys.stderr)
        sys.exit(3)


if __name__ == "__main__":
    main()
