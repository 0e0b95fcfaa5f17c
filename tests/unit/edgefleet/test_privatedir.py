"""Data dirs made owner-only whatever the umask, and a warning for one that others can enter."""

import os
import stat

import pytest

from edgefleet.privatedir import exposure, make_private_dir


@pytest.fixture
def umask_022():
    old = os.umask(0o022)
    yield
    os.umask(old)


def _mode(path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_made_0700_with_every_missing_parent_under_umask_022(tmp_path, umask_022):
    target = tmp_path / "a" / "b" / "data"
    assert make_private_dir(target) == target
    for path in (tmp_path / "a", tmp_path / "a" / "b", target):
        assert _mode(path) == 0o700, path


def test_made_0700_even_under_a_umask_that_takes_owner_bits(tmp_path):
    old = os.umask(0o277)
    try:
        make_private_dir(tmp_path / "d")
    finally:
        os.umask(old)
    assert _mode(tmp_path / "d") == 0o700


def test_an_existing_dir_is_left_as_it_is_and_its_exposure_said(tmp_path, umask_022):
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o755)
    make_private_dir(shared)
    assert _mode(shared) == 0o755
    assert exposure(shared) == f"{shared} is open to other users (mode 0755); make it owner-only: chmod 700 {shared}"
    shared.chmod(0o750)
    assert "open to its group (mode 0750)" in exposure(shared)
    shared.chmod(0o700)
    assert exposure(shared) is None
    assert exposure(tmp_path / "missing") is None


def test_a_file_in_the_way_is_an_error(tmp_path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(OSError):
        make_private_dir(tmp_path / "f" / "sub")
