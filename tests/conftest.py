"""Shared fixtures: where the real data lives, and small real slices of it."""

from __future__ import annotations

import os
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SHARED_DATA = Path(os.environ.get("HAR_SHARED_DATA", REPO.parent / "shared" / "data"))
HAPT_ZIP = SHARED_DATA / "HAPT_RawData_train_users.zip"
UCI_SUBSET_ZIP = SHARED_DATA / "UCI_HAR_subset_train_4sigdig.zip"


def _need(path: Path) -> Path:
    if not path.exists():
        pytest.fail(f"{path} is missing: the tests read the real data in ../shared/data (or set HAR_SHARED_DATA)")
    return path


@pytest.fixture(scope="session")
def hapt_zip() -> Path:
    return _need(HAPT_ZIP)


@pytest.fixture(scope="session")
def uci_subset_zip() -> Path:
    return _need(UCI_SUBSET_ZIP)


@pytest.fixture(scope="session")
def hapt_user1_dir(tmp_path_factory, hapt_zip) -> Path:
    """A small extracted HAPT folder: labels.txt and both experiments of user 1 (real data)."""
    root = tmp_path_factory.mktemp("hapt_user1")
    raw = root / "RawData"
    raw.mkdir()
    with zipfile.ZipFile(hapt_zip) as z:
        for member in z.namelist():
            name = Path(member).name
            if name == "labels.txt" or name.endswith("_user01.txt"):
                (raw / name).write_bytes(z.read(member))
    return root
