"""The writer: the smalldata API over the Rust engine (filled in by the Python package issue)."""

__all__ = ["SmallData"]


class SmallData:
    """(scaffold) Replaced by the real writer."""
