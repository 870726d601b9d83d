"""Drop-in replacements for older tools, backed by smdfs's Rust engines.

Change only the import line:

- ``from smdfs.compat.simrecorder import Recorder, InMemoryDataStore, HDF5DataStore, ZarrDataStore``
- ``from smdfs.compat.splitdataloader import write_split_data, SplitDataLoader, MpQItr``
- ``from smdfs.compat.bigarray import PointerArrayWriter, PointerArray``
- ``from smdfs.compat.multitables import Streamer, Reader``

Each module keeps its tool's names, arguments and behaviour; where this version differs
(documented in each module), it raises a clear error instead of silently doing less.
"""

__all__ = ["simrecorder", "splitdataloader", "bigarray", "multitables"]
