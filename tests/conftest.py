"""Shared fixtures: where the real data lives, small real slices of it, and the model bundle the edge tests use.
Helpers that are not fixtures are in helpers.py; real services in services.py."""

from __future__ import annotations

import zipfile
from pathlib import Path

import pytest

from firmware_bridge.recording import HAPT_ARCHIVE, data_root

from helpers import SHIPPED_BUNDLE, TINY_BUNDLE, find_bundle

UCI_SUBSET = "UCI_HAR_subset_train_4sigdig.zip"


def _need(path: Path) -> Path:
    if not path.exists():
        pytest.fail(f"{path} is missing: the tests read the real data in ../shared/data (or set HAR_SHARED_DATA)")
    return path


@pytest.fixture(scope="session")
def hapt_zip() -> Path:
    return _need(data_root() / HAPT_ARCHIVE)


@pytest.fixture(scope="session")
def uci_subset_zip() -> Path:
    return _need(data_root() / UCI_SUBSET)


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


@pytest.fixture(scope="session")
def hapt_recording(hapt_user1_dir) -> Path:
    """HAPT user 1, experiment 1: 20,598 real samples (6.9 min) with labels.txt beside it."""
    return hapt_user1_dir / "RawData" / "acc_exp01_user01.txt"


@pytest.fixture(scope="session")
def bundle_dir() -> Path:
    """HAR_EDGE_TEST_BUNDLE if set, else the shipped model, else the export tests' tiny bundle."""
    path = find_bundle()
    if path is None:
        pytest.skip(f"no model bundle: neither {SHIPPED_BUNDLE} nor {TINY_BUNDLE} is there and HAR_EDGE_TEST_BUNDLE "
                    "is not set (point it at a directory written by `har-export`)")
    return path
