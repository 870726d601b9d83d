"""Private runs (issue "hostile input"): ``SmallData(dir, private=True)`` creates the run
directory owner-only (mode 0700); the default keeps the usual mode (umask)."""

import os
import stat

import smdfs


def _write(path, **kw):
    smd = smdfs.SmallData(str(path), servers=1, **kw)
    smd.event(1, x=1.0)
    smd.done()


def test_private_run_directory_is_owner_only(tmp_path):
    _write(tmp_path / "private", private=True)
    assert stat.S_IMODE(os.stat(tmp_path / "private").st_mode) == 0o700
    _write(tmp_path / "open")
    assert stat.S_IMODE(os.stat(tmp_path / "open").st_mode) & 0o077 != 0
    assert smdfs.open(str(tmp_path / "private"))["x"][:].tolist() == [1.0]
