"""splitdataloader's API over smdfs's split-records engine.

::

    from smdfs.compat.splitdataloader import write_split_data, SplitDataLoader, MpQItr
    write_split_data("data", (pickle.dumps(x) for x in samples), splits=128)
    loader = SplitDataLoader("data")
    len(loader), loader[17]                      # bytes of record 17 (write order)
    for rec in loader.iterate_binwise(shuffle=True):  # bins in random order, shuffled inside
        ...
    for batch in MpQItr[bytes](loader.iterate_binwise, shuffle=True):  # in a child process
        ...

Records are memory-mapped: ``loader[i]`` is two loads from the index and one copy, and
``iterate_binwise`` reads the next bins ahead on a background thread (an iterator started
before a ``fork`` raises ``smdfs.Error`` in the child: start it there). Shuffling draws its
seed from :mod:`random`, so ``random.seed(s)`` makes the order repeatable.

Differences from splitdataloader: writing into a directory that already holds records raises
(pass ``start_clean=True`` to replace them) instead of appending; ``shuffle=`` of
``write_split_data`` is accepted and has no effect (record ``i`` always lives in bin
``i % splits``); an exception in ``MpQItr``'s generator is raised in the consumer instead of
being logged and ending the iteration early.
"""

from __future__ import annotations

import multiprocessing
import os
import queue as _queue
import random
import shutil
import traceback
from typing import Any, Callable, Generic, Iterable, Iterator, Optional, TypeVar

from .. import _smdfs

__all__ = ["write_split_data", "SplitDataLoader", "MpQItr"]

T = TypeVar("T")


def write_split_data(
    target_dir: "str | os.PathLike",
    input_sequence: Optional[Iterable[bytes]] = None,
    splits: int = 256,
    shuffle: bool = False,
    start_clean: bool = False,
    *,
    data_source: Optional[Iterable[bytes]] = None,
) -> None:
    """Writes a sequence of ``bytes`` records into ``splits`` bin files under ``target_dir``
    (record ``i`` in bin ``i % splits``) plus one index, written last.

    ``data_source=`` is accepted as another name for ``input_sequence``; ``start_clean``
    removes ``target_dir`` first; ``shuffle`` has no effect (see the module doc).
    """
    records = input_sequence if input_sequence is not None else data_source
    if records is None:
        raise TypeError("write_split_data() needs the records (input_sequence)")
    if start_clean:
        shutil.rmtree(target_dir, ignore_errors=True)
    _smdfs.split_write(os.fspath(target_dir), records, int(splits))


class SplitDataLoader(_smdfs.SplitLoaderHandle):
    """Reads a directory written by :func:`write_split_data`: ``len(loader)``,
    ``loader[i]`` (bytes; IndexError past the end) and :meth:`iterate_binwise`."""

    def __init__(self, data_dir: "str | os.PathLike") -> None:
        self.data_dir = os.fspath(data_dir)

    def iterate_binwise(self, shuffle: bool = False) -> Iterator[bytes]:
        """Yields every record bin by bin (much faster than indexing). With ``shuffle``, bins
        come in random order and records in random order within each bin."""
        seed = random.getrandbits(64) if shuffle else None
        it = self._binwise(seed)
        while True:
            records = it.next_bin()
            if records is None:
                return
            yield from records

    def __iter__(self) -> Iterator[bytes]:
        return self.iterate_binwise(shuffle=False)

    def __repr__(self) -> str:
        return f"SplitDataLoader({self.data_dir!r}: {len(self)} records in {self.splits} bins)"


class _End:
    pass


class _Failed:
    def __init__(self, error: BaseException, text: str):
        self.error = error
        self.text = text


_BATCH = 64


def _produce(out: Any, fn: Callable, args: tuple, kwargs: dict) -> None:
    """Runs in the child: puts the generator's items on the queue in small lists."""
    try:
        batch: list = []
        for item in fn(*args, **kwargs):
            batch.append(item)
            if len(batch) >= _BATCH:
                out.put(batch)
                batch = []
        if batch:
            out.put(batch)
        out.put(_End())
    except BaseException as e:  # noqa: BLE001 - handed to the consumer, which raises it
        try:
            out.put(_Failed(e, traceback.format_exc()))
        except Exception:  # an unpicklable exception: send its text
            out.put(_Failed(RuntimeError(str(e)), traceback.format_exc()))


class MpQItr(Generic[T]):
    """Iterates what ``itr_func(*args, **kwargs)`` yields while it runs in a separate
    process, feeding a bounded queue (``qsize`` slots of up to 64 items each). Items must be
    picklable. ``MpQItr[BatchType](...)`` types the items."""

    def __init__(self, itr_func: Callable[..., Iterable[T]], *args: Any, **kwargs: Any) -> None:
        self.itr_func = itr_func
        self.args = args
        self.kwargs = kwargs
        self.qsize = 16
        self.proc: Any = None
        self.yield_q: Any = None
        self._items: list = []

    def __iter__(self) -> "MpQItr[T]":
        self.close()
        self.yield_q = multiprocessing.Queue(self.qsize)
        self.proc = multiprocessing.Process(
            target=_produce, args=(self.yield_q, self.itr_func, self.args, self.kwargs), daemon=True)
        self.proc.start()
        self._items = []
        return self

    def __next__(self) -> T:
        while not self._items:
            if self.yield_q is None:
                raise StopIteration
            try:
                got = self.yield_q.get(timeout=1.0)
            except _queue.Empty:
                if self.proc is not None and not self.proc.is_alive() and self.yield_q.empty():
                    code = self.proc.exitcode
                    self.close()
                    raise RuntimeError(f"MpQItr: the generator's process died (exit code {code})") from None
                continue
            if isinstance(got, _End):
                self.close()
                raise StopIteration
            if isinstance(got, _Failed):
                self.close()
                raise RuntimeError(f"MpQItr: the generator failed in its process:\n{got.text}") from got.error
            got.reverse()
            self._items = got
        return self._items.pop()

    def close(self) -> None:
        """Stops the child process (if running) and drops the queue."""
        if self.proc is not None:
            if self.proc.is_alive():
                self.proc.terminate()
            self.proc.join()
        self.proc = None
        self.yield_q = None

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass
