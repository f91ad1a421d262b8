"""One writer per dataset: a second writer (another process) gets one line naming the PID."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from data_helpers import make_dataset, open_writer, static_arrays, write_batches

from data.lock import DatasetLock, DatasetLockedError, lock_path
from data.shards import combine_shards

HOLD = """
import sys, time
sys.path.insert(0, {tests!r})
import data_helpers as h
w = h.open_writer(h.Path({path!r}){extra})
print("held", flush=True)
time.sleep(60)
"""


def _holder(path: Path, extra: str = "") -> subprocess.Popen:
    tests = str(Path(__file__).parent)
    code = HOLD.format(tests=tests, path=str(path), extra=extra)
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
    return proc


def test_a_second_writer_is_refused_with_the_holders_pid(tmp_path: Path) -> None:
    path = tmp_path / "train.h5"
    proc = _holder(path)
    try:
        with pytest.raises(DatasetLockedError, match=rf"PID {proc.pid}\b") as err:
            open_writer(path, overwrite=True)
        assert len(str(err.value).splitlines()) == 1
        with pytest.raises(DatasetLockedError):  # --resume is refused the same way
            open_writer(path, resume=True)
    finally:
        proc.kill()
        proc.wait()
    # kill -9 drops the lock: the run resumes and completes
    with open_writer(path, resume=True) as w:
        w.write_static(*static_arrays())
        write_batches(w, batch=5)
    assert path.exists()


def test_lock_is_released_on_close_and_finalize(tmp_path: Path) -> None:
    path = tmp_path / "a.h5"
    w = open_writer(path)
    with pytest.raises(DatasetLockedError, match=r"PID \d+"):
        open_writer(path, overwrite=True)
    w.close()
    with open_writer(path, resume=True) as w2:  # close released it
        w2.write_static(*static_arrays())
        write_batches(w2, batch=5)
    assert not lock_path(path).exists()  # finalize released it and removed the file
    with DatasetLock(path):
        assert lock_path(path).read_text().strip() == str(os.getpid())
    assert not lock_path(path).exists()


def test_combine_takes_the_master_lock(tmp_path: Path) -> None:
    shard = make_dataset(tmp_path / "train.shard-000-of-001.h5")
    out = tmp_path / "train.h5"
    with DatasetLock(out), pytest.raises(DatasetLockedError, match="being written"):
        combine_shards([shard], out)
    assert not out.exists()
    assert combine_shards([shard], out) == out.absolute()
