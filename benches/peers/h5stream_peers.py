"""Python peers of benches/h5stream_bench.rs: plain h5py and PyPI `multitables` streaming one
dataset of an HDF5 file. Prints one line per measurement: `NAME SECONDS BYTES`.

    python h5stream_peers.py write FILE ROWS COLS      # f32 [ROWS, COLS], contiguous, /data
    python h5stream_peers.py read FILE BLOCK_ROWS [--cold]
"""
import os
import sys
import time

import h5py
import numpy as np


def drop_cache(path):
    fd = os.open(path, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def write(path, rows, cols):
    block = 1 << 14
    with h5py.File(path, "w") as f:
        d = f.create_dataset("data", shape=(rows, cols), dtype="<f4")
        for s in range(0, rows, block):
            n = min(block, rows - s)
            d[s:s + n] = (np.arange(s * cols, (s + n) * cols, dtype=np.float64) % 1000003).astype("<f4").reshape(n, cols)


def measure(name, path, cold, fn):
    if cold:
        drop_cache(path)
    t = time.perf_counter()
    nbytes = fn()
    print(f"{name} {time.perf_counter() - t:.6f} {nbytes}", flush=True)


def h5py_all(path):
    with h5py.File(path, "r") as f:
        a = f["data"][:]
        return a.nbytes


def h5py_blocks(path, block_rows):
    with h5py.File(path, "r") as f:
        d = f["data"]
        rows = d.shape[0]
        buf = np.empty((block_rows,) + d.shape[1:], dtype=d.dtype)
        total = 0
        for s in range(0, rows, block_rows):
            n = min(block_rows, rows - s)
            d.read_direct(buf, np.s_[s:s + n], np.s_[0:n])
            total += buf[:n].nbytes
        return total


def multitables_stream(path, block_rows, n_procs):
    import multitables
    stream = multitables.Streamer(filename=path)
    q = stream.get_queue(path="/data", n_procs=n_procs, block_size=block_rows, remainder=True)
    total = 0
    for guard in q.iter():
        with guard as batch:
            total += batch.nbytes
    q.close()
    return total


def main():
    cmd, path = sys.argv[1], sys.argv[2]
    if cmd == "write":
        write(path, int(sys.argv[3]), int(sys.argv[4]))
        return
    block_rows = int(sys.argv[3])
    cold = "--cold" in sys.argv
    measure("h5py_all", path, cold, lambda: h5py_all(path))
    measure("h5py_blocks", path, cold, lambda: h5py_blocks(path, block_rows))
    for n in (1, 2, 4):
        measure(f"multitables_{n}", path, cold, lambda: multitables_stream(path, block_rows, n))


if __name__ == "__main__":
    main()
