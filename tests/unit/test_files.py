"""tokenmill.files: a file is replaced whole, or left as it was."""

import pytest

from tokenmill.files import write_atomically, write_text_atomically


def leftovers(folder):
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".tmp"))


def test_writes_the_new_content_and_returns_its_size(tmp_path):
    path = tmp_path / "out.bin"
    path.write_bytes(b"old")
    assert write_atomically(path, lambda out: out.write(b"new content")) == 11
    assert path.read_bytes() == b"new content"
    assert leftovers(tmp_path) == []


def test_a_failing_writer_leaves_the_old_file(tmp_path):
    path = tmp_path / "out.txt"
    path.write_text("old")

    def half(out):
        out.write(b"half of")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        write_atomically(path, half)
    assert path.read_text() == "old"
    assert leftovers(tmp_path) == []


def test_check_sees_the_finished_file_and_can_keep_the_old_one(tmp_path):
    path = tmp_path / "models.toml"
    path.write_text("old")
    seen = []

    def reject(tmp):
        seen.append(tmp.read_text())
        raise ValueError("not a models file")

    with pytest.raises(ValueError, match="not a models file"):
        write_text_atomically(path, "candidate", check=reject)
    assert seen == ["candidate"]
    assert path.read_text() == "old"
    assert leftovers(tmp_path) == []
    write_text_atomically(path, "accepted", check=lambda tmp: None)
    assert path.read_text() == "accepted"


def test_creates_a_missing_file_and_text_is_utf8(tmp_path):
    path = tmp_path / "new.txt"
    assert write_text_atomically(path, "héllo") == len("héllo".encode())
    assert path.read_text(encoding="utf-8") == "héllo"


def test_each_write_has_its_own_temporary_name(tmp_path):
    """Two writes to one path, one inside the other's writer (as two threads may
    interleave), must not share a temporary file."""
    path = tmp_path / "state.json"

    def outer(out):
        out.write(b"outer")
        write_atomically(path, lambda inner: inner.write(b"inner"))

    write_atomically(path, outer)
    assert path.read_bytes() == b"outer"
    assert leftovers(tmp_path) == []
