"""bundle.json's `training_data`: HAPT-derived weights say so (no commercial use); one's own data does not."""
from __future__ import annotations

import json
from pathlib import Path

from training.datasets import MANIFEST

from export.cli import HAPT_NOTICE, OWN_DATA_NOTICE, training_data

REPO = Path(__file__).resolve().parent.parent


def test_hapt_weights_carry_the_data_sets_terms(hapt_zip):
    assert training_data({"train_config": {"data": str(hapt_zip)}}) == {"kind": "hapt", "notice": HAPT_NOTICE}
    assert "commercial" in HAPT_NOTICE and "Reyes-Ortiz" in HAPT_NOTICE


def test_own_recordings_carry_no_restriction_and_a_missing_data_set_is_named(tmp_path):
    (tmp_path / MANIFEST).write_text("recording,subject\n")
    assert training_data({"train_config": {"data": str(tmp_path)}}) == {"kind": "recordings",
                                                                         "notice": OWN_DATA_NOTICE}
    unknown = training_data({"train_config": {"data": str(tmp_path / "gone")}})
    assert unknown["kind"] == "unknown" and "check its licence" in unknown["notice"]


def test_the_shipped_bundles_say_they_derive_from_hapt():
    for name in ("default", "modern_tcn"):
        data = json.loads((REPO / "edge" / "models" / name / "bundle.json").read_text())
        assert data["training_data"] == {"kind": "hapt", "notice": HAPT_NOTICE}
