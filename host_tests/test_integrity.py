"""Files siq writes carry a content hash checked on load: a changed byte is refused naming the file, and
truncated, garbage, foreign or older unhashed files get siq's own one-line message (not torch's text cut off
mid-word, not "[Errno 22]"). In-process CLI, as in test_reliability.py."""
import io
import zipfile
from pathlib import Path

import pytest
import torch

from siq.codegen.cli import main
from siq.training.fileio import FORMAT_VERSION, load_torch, save_torch
from siq.training.errors import SiqError
from conftest import write_model_files


@pytest.fixture(scope="module")
def files(tmp_path_factory, digits):
    return write_model_files(tmp_path_factory.mktemp("integrity"), digits, "uniform", 100)


def refused(capsys, *args) -> str:
    code = main([str(a) for a in args])
    lines = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("siq: error:"), lines
    return lines[0]


def flip_data_byte(src: Path, dst: Path, member: str) -> Path:
    """Copy src with one byte of a tensor's stored data changed (the zip CRC is now wrong; torch reads on)."""
    data = bytearray(src.read_bytes())
    with zipfile.ZipFile(io.BytesIO(bytes(data))) as z:
        info = next(i for i in z.infolist() if i.filename.endswith(member))
    name_len, extra_len = int.from_bytes(data[info.header_offset + 26:info.header_offset + 28], "little"), \
        int.from_bytes(data[info.header_offset + 28:info.header_offset + 30], "little")
    offset = info.header_offset + 30 + name_len + extra_len
    data[offset] ^= 0x01
    dst.write_bytes(bytes(data))
    return dst


@pytest.mark.parametrize("kind", ["quantized", "float"])
def test_a_changed_byte_is_refused_naming_the_file(kind, files, tmp_path, capsys):
    bad = flip_data_byte(files / f"{kind}.pt", tmp_path / "changed.pt", "data/0")
    torch.load(bad, weights_only=True)  # torch itself does not notice
    if kind == "quantized":
        line = refused(capsys, "export", bad, "--out", tmp_path / "fw", "--vectors", 0)
        assert not (tmp_path / "fw").exists()
    else:
        line = refused(capsys, "quantize", bad, "--method", "uniform", "--out", tmp_path / "q.pt")
        assert not (tmp_path / "q.pt").exists()
    assert "does not match its hash" in line and str(bad) in line
    assert "does not match its hash" in refused(capsys, "eval", bad)


@pytest.mark.parametrize("cut", [0, 10, 100, 1000, 3000, -100, -1])
def test_truncated_files_get_one_line_in_siqs_words(cut, files, tmp_path, capsys):
    whole = (files / "quantized.pt").read_bytes()
    bad = tmp_path / "cut.pt"
    bad.write_bytes(whole[:cut] if cut else b"")
    line = refused(capsys, "eval", bad)
    assert str(bad) in line and "Errno" not in line and "torch" not in line and "re-create it with siq" in line, line


@pytest.mark.parametrize("content", [b"garbage", b"PK\x03\x04" + bytes(200), b"\x80\x02}q\x00."])
def test_garbage_files_get_one_line_in_siqs_words(content, tmp_path, capsys):
    bad = tmp_path / "garbage.pt"
    bad.write_bytes(content)
    line = refused(capsys, "quantize", bad, "--out", tmp_path / "q.pt")
    assert "is not a readable siq checkpoint file" in line and "torch" not in line, line


def test_foreign_torch_file_and_older_unhashed_format(tmp_path, capsys):
    foreign = tmp_path / "foreign.pt"
    torch.save({"state_dict": {"w": torch.zeros(3)}}, foreign)
    assert "is not a siq quantized file (format None)" in refused(capsys, "export", foreign, "--out", tmp_path / "f")
    old = tmp_path / "old.pt"
    torch.save({"format": "siq-quantized", "version": 1, "meta": "{}", "tensors": {}}, old)
    line = refused(capsys, "export", old, "--out", tmp_path / "fw")
    assert "without a content hash" in line and str(old) in line


def test_round_trip_and_the_hash_covers_meta_and_every_tensor(tmp_path):
    path = tmp_path / "x.pt"
    save_torch(path, "checkpoint", {"a": 1}, {"w": torch.arange(6.0).reshape(2, 3), "b": torch.zeros(2),
                                              "count": torch.tensor(7), "flags": torch.ones(3, dtype=torch.bool)})
    meta, tensors = load_torch(path, "checkpoint")
    assert meta == {"a": 1} and torch.equal(tensors["w"], torch.arange(6.0).reshape(2, 3))
    blob = torch.load(path, weights_only=True)
    assert blob["version"] == FORMAT_VERSION
    for change in (lambda b: b.__setitem__("meta", '{"a": 2}'),
                   lambda b: b["tensors"]["b"].__setitem__(0, 1.0),
                   lambda b: b["tensors"].__setitem__("w", b["tensors"]["w"].reshape(3, 2)),
                   lambda b: b["tensors"].pop("b"),
                   lambda b: b["tensors"].__setitem__("count", torch.tensor(8))):
        blob = torch.load(path, weights_only=True)
        change(blob)
        torch.save(blob, tmp_path / "changed.pt")
        with pytest.raises(SiqError, match="does not match its hash"):
            load_torch(tmp_path / "changed.pt", "checkpoint")
