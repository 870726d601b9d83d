"""The reader: ``smdfs.open(dir)`` and lazy numpy datasets (filled in by the Python package issue)."""

__all__ = ["open"]


def open(path):  # noqa: A001 - the package's public name
    """(scaffold) Replaced by the real reader."""
    raise NotImplementedError("scaffold")
