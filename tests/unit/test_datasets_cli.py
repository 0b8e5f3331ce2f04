"""`ratchet datasets add | list | show`: what is printed, what is written, what is refused."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ml_tasks.datasets.declarations import load_declaration
from ml_tasks.ops.cli import main


@pytest.fixture
def churn_drop(tmp_path: Path) -> Path:
    rng = np.random.default_rng(0)
    rows = 300
    folder = tmp_path / "drop"
    folder.mkdir()
    pd.DataFrame({
        "id": np.arange(rows),
        "tenure": rng.integers(0, 72, rows),
        "charges": rng.gamma(2.0, 30.0, rows),
        "contract": rng.choice(["monthly", "yearly", "two_year"], rows),
        "churn": np.where(rng.random(rows) < 0.25, "Yes", "No"),
    }).to_parquet(folder / "part-0.parquet", index=False)
    return folder


def test_add_prints_every_decision_and_a_review(dirs, churn_drop, capsys):
    rc = main(["datasets", "add", "churn", "--from", churn_drop.as_uri(), "--target", "churn",
               "--schedule", "0 3 * * *", "--source-template", "s3://bucket/churn/{ds}/"])
    out = capsys.readouterr().out
    assert rc == 0
    assert "target 'churn': binary" in out
    assert "positive class: 'Yes' ('yes' is a known positive word)" in out
    assert re.search(r"^  id +EXCLUDED id-like", out, re.MULTILINE)
    assert "REVIEW before committing:" in out and "threshold absolute roc_auc 0.52" in out
    spec = load_declaration(dirs["datasets"] / "churn.yaml")
    assert (spec.schedule, spec.source_template) == ("0 3 * * *", "s3://bucket/churn/{ds}/")
    assert (dirs["expectations"] / "suites" / "churn.json").is_file()
    assert (dirs["expectations"] / "checkpoints" / "churn.json").is_file()

    assert main(["datasets", "list"]) == 0
    listed = capsys.readouterr().out.splitlines()
    assert listed[0].split() == ["NAME", "TASK", "TARGET", "FEATURES", "SCHEDULE", "FILE"]
    assert listed[1].split()[:4] == ["churn", "binary", "churn", "3"]
    assert main(["datasets", "show", "churn"]) == 0
    assert "positive 'Yes'" in capsys.readouterr().out


def test_add_refusals(dirs, churn_drop, capsys):
    assert main(["datasets", "add", "churn", "--from", str(churn_drop), "--target", "nope"]) != 0
    assert "its columns: id, tenure, charges, contract, churn" in capsys.readouterr().err
    assert main(["datasets", "add", "Churn-2", "--from", str(churn_drop), "--target", "churn"]) != 0
    assert "not a plain name" in capsys.readouterr().err
    assert main(["datasets", "add", "churn", "--from", str(churn_drop), "--target", "churn"]) == 0
    capsys.readouterr()
    assert main(["datasets", "add", "churn", "--from", str(churn_drop), "--target", "churn"]) != 0
    assert "churn.yaml" in capsys.readouterr().err
    assert main(["datasets", "add", "churn", "--from", str(churn_drop), "--target", "churn", "--force"]) == 0
    assert main(["datasets", "add", "other", "--from", str(churn_drop / "missing"), "--target", "churn"]) != 0
    assert "no such file or folder" in capsys.readouterr().err
    assert main(["datasets", "show", "nothing"]) != 0
    assert "unknown dataset 'nothing'" in capsys.readouterr().err
