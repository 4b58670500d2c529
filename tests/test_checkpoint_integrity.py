"""Checkpoint integrity (issue 20, item 2): atomic saves (temporary file, fsync, rename) and a
digest checked on load. The references are the file system itself (what ``os`` sees on disk,
which file descriptor was flushed) and ``torch.load`` of the bytes; no Ray."""

from __future__ import annotations

import os
import warnings

import pytest
import torch

from raysign.signsgd import checkpoint as ckpt
from raysign.signsgd.checkpoint import CheckpointError, load_checkpoint, save_checkpoint

CONFIG = {"model": "mlp", "lr": 0.002}
MARKER = 1.5  # the value every parameter holds, to find the tensor's bytes in the file


def save(path, step, **kwargs):
    state = {"flat": torch.full((2000,), MARKER), "momentum": torch.zeros(3), "epoch": 0,
             "schedule": {"steps_done": step, "lr": 0.002, "scheduler": {}}}
    return save_checkpoint(path, config=CONFIG, step=step, workers=[state], **kwargs)


def flip_one_parameter_bit(path):
    data = bytearray(path.read_bytes())
    at = data.find(torch.full((8,), MARKER).numpy().tobytes())
    assert at > 0
    data[at + 4000] ^= 0x01  # one bit of one parameter, in the tensor's stored bytes
    path.write_bytes(bytes(data))


def test_a_flipped_bit_in_the_parameters_is_refused_naming_the_file(tmp_path):
    path = save(tmp_path / "checkpoint.pt", 5)
    flip_one_parameter_bit(path)
    # torch itself reads the damaged file without complaint: the digest is what catches it.
    damaged = torch.load(path, weights_only=True)["workers"][0]["flat"]
    assert (damaged != MARKER).sum() == 1
    with pytest.raises(CheckpointError, match="corrupted") as err:
        load_checkpoint(path)
    assert str(path) in str(err.value) and "\n" not in str(err.value)


def test_a_truncated_checkpoint_fails_in_one_line_naming_the_file(tmp_path):
    path = save(tmp_path / "checkpoint.pt", 5)
    path.write_bytes(path.read_bytes()[: path.stat().st_size - 300])
    with pytest.raises(CheckpointError, match="truncated") as err:
        load_checkpoint(path)
    assert str(path) in str(err.value) and "\n" not in str(err.value)


def test_the_file_is_flushed_before_the_rename_and_the_folder_after(tmp_path, monkeypatch):
    events = []
    fsync, replace = os.fsync, os.replace

    def recording_fsync(fd):
        events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
        fsync(fd)

    def recording_replace(src, dst):
        events.append(("replace", str(src), str(dst)))
        replace(src, dst)

    monkeypatch.setattr(ckpt.os, "fsync", recording_fsync)
    monkeypatch.setattr(ckpt.os, "replace", recording_replace)
    path = tmp_path / "checkpoint.pt"
    save(path, 5)
    tmp = str(path) + ".tmp"
    assert events == [("fsync", tmp), ("replace", tmp, str(path)), ("fsync", str(tmp_path))]


def test_a_save_killed_before_its_rename_leaves_the_previous_checkpoint(tmp_path, monkeypatch):
    path = save(tmp_path / "checkpoint.pt", 3)
    previous = path.read_bytes()

    class Killed(BaseException):
        pass

    def killed(src, dst):
        raise Killed  # the process dies after writing the temporary file

    with monkeypatch.context() as patch:
        patch.setattr(ckpt.os, "replace", killed)
        with pytest.raises(Killed):
            save(path, 6)
    assert (tmp_path / "checkpoint.pt.tmp").exists()
    assert path.read_bytes() == previous and load_checkpoint(path)["step"] == 3
    # A half-written temporary file does not get in the way of the next save.
    (tmp_path / "checkpoint.pt.tmp").write_bytes(previous[:100])
    save(path, 9)
    assert load_checkpoint(path)["step"] == 9


def test_a_checkpoint_without_a_digest_loads_with_a_warning(tmp_path):
    path = tmp_path / "old.pt"
    state = {"flat": torch.zeros(3), "momentum": torch.zeros(3)}
    torch.save({"format": ckpt.FORMAT, "version": ckpt.VERSION, "config": CONFIG, "step": 4,
                "workers": [state], "extra": {}}, path)
    with pytest.warns(UserWarning, match="no digest"):
        assert load_checkpoint(path)["step"] == 4
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a checkpoint with its digest loads silently
        assert load_checkpoint(save(tmp_path / "new.pt", 4))["step"] == 4
