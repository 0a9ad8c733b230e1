"""The command line: errors without tracebacks, the import/summary flow on a real (small) world."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

DATA = Path(__file__).parent / "data"


def _run(args: list[str], home: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "KUNDENWERT_HOME": str(home), "COLUMNS": "200"}
    env.pop("KUNDENWERT_DATABASE_URL", None)
    return subprocess.run(
        [sys.executable, "-m", "kundenwert.cli", *args], capture_output=True, text=True, env=env
    )


def test_bad_import_exits_nonzero_without_traceback(tmp_path: Path) -> None:
    r = _run(["import", str(DATA / "bad" / "decimal_comma"), "--mode", "replace"], tmp_path)
    assert r.returncode == 2
    assert "Traceback" not in r.stderr + r.stdout
    assert "table purchases, row 2, column amount, value '60,00'" in r.stderr
    assert "nothing was written" in r.stderr


def test_more_than_twenty_issues_are_counted(tmp_path: Path) -> None:
    folder = tmp_path / "many"
    folder.mkdir()
    rows = "\n".join(f"C{i},not-a-date,consumer" for i in range(25))
    (folder / "customers.csv").write_text(f"customer_id,created_at,customer_type\n{rows}\n")
    (folder / "purchases.csv").write_text("purchase_id,customer_id,purchased_at,category,amount\n")
    r = _run(["import", str(folder), "--mode", "replace"], tmp_path)
    assert r.returncode == 2 and "25 problems" in r.stderr and "... and 5 more" in r.stderr


def test_sample_import_summary(tmp_path: Path) -> None:
    world = tmp_path / "world"
    assert _run(["sample", str(world), "--customers", "300", "--seed", "5"], tmp_path).returncode == 0
    r = _run(["import", str(world), "--mode", "replace"], tmp_path)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "kundenwert.db").exists()
    s = _run(["summary", "--at", "2025-12-31"], tmp_path)
    assert s.returncode == 0, s.stderr
    assert "customers by type and age group" in s.stdout and "email consent" in s.stdout
    again = _run(["import", str(world)], tmp_path)  # append of the same ids is refused
    assert again.returncode == 2 and "already exists in the store" in again.stderr


def test_snapshot_and_features_commands(tmp_path: Path) -> None:
    import pandas as pd

    world = tmp_path / "world"
    assert _run(["sample", str(world), "--customers", "400", "--seed", "6"], tmp_path).returncode == 0
    assert _run(["import", str(world), "--mode", "replace"], tmp_path).returncode == 0
    r = _run(
        ["snapshot", "--cutoff", "2025-06-01", "--out", str(tmp_path / "snap.parquet"), "--jobs", "2"],
        tmp_path,
    )
    assert r.returncode == 0, r.stderr
    snap = pd.read_parquet(tmp_path / "snap.parquet")
    assert snap.index.name == "customer_id" and {"frequency", "recency", "T", "monetary_value"} <= set(
        snap.columns
    )
    f = _run(["features"], tmp_path)
    assert f.returncode == 0 and "days_since_last_purchase" in f.stdout
    bad = _run(
        ["snapshot", "--cutoff", "2025-06-01", "--out", str(tmp_path / "x.parquet"), "--unit", "M"], tmp_path
    )
    assert bad.returncode == 2 and "--unit must be D or W" in bad.stderr and "Traceback" not in bad.stderr


def test_sample_variants_import_and_summary(tmp_path: Path, monkeypatch) -> None:
    """``kundenwert sample`` with the variant options (a bank-like world; the e-mail experiment)."""
    import json

    import pandas as pd
    from typer.testing import CliRunner

    from kundenwert.cli import app

    monkeypatch.setenv("KUNDENWERT_HOME", str(tmp_path))
    monkeypatch.delenv("KUNDENWERT_DATABASE_URL", raising=False)
    runner = CliRunner()
    help_text = runner.invoke(app, ["sample", "--help"], env={"COLUMNS": "200"}).output
    options = ("--max-calls", "--no-purchases", "--experiment", "--no-control", "--no-effect")
    assert all(o in help_text for o in options)

    bank = tmp_path / "bank"
    args = [
        "sample",
        str(bank),
        "-n",
        "600",
        "--seed",
        "5",
        "--max-calls",
        "3",
        "--no-purchases",
        "--no-control",
    ]
    r = runner.invoke(app, args)
    assert r.exit_code == 0, r.output
    assert not (bank / "purchases.csv").exists() and (bank / "contacts.csv").exists()
    design = json.loads((bank / "truth" / "design.json").read_text())
    assert design["variants"] == {
        "max_calls": 3,
        "purchases": False,
        "experiment": False,
        "control": False,
        "effect": True,
    }
    contacts = pd.read_csv(bank / "contacts.csv", dtype=str)
    out = contacts[contacts["direction"] == "outbound"]
    assert (out["is_control"] == "false").all()
    assert out.groupby(["customer_id", "campaign_id"]).size().max() > 1
    r = runner.invoke(app, ["import", str(bank), "--mode", "replace"])
    assert r.exit_code == 0, r.output
    s = runner.invoke(app, ["summary", "--at", "2025-12-31"])
    assert s.exit_code == 0, s.output
    assert "no purchases in the store" in s.output and "email consent" in s.output

    exp = tmp_path / "experiment"
    r = runner.invoke(app, ["sample", str(exp), "-n", "600", "--seed", "5", "--experiment"])
    assert r.exit_code == 0, r.output
    out = pd.read_csv(exp / "contacts.csv", dtype=str).query("direction == 'outbound'")
    assert out["campaign_id"].nunique() == 1 and 0.2 < (out["is_control"] == "true").mean() < 0.45

    bad = runner.invoke(app, ["sample", str(tmp_path / "x"), "-n", "50", "--experiment", "--no-control"])
    assert bad.exit_code == 2 and "--no-control" in bad.output and "Traceback" not in bad.output
    bad = runner.invoke(app, ["sample", str(tmp_path / "x"), "-n", "50", "--max-calls", "0"])
    assert bad.exit_code == 2 and "--max-calls must be at least 1" in bad.output


def test_sample_no_effect_writes_a_world_without_lift(tmp_path: Path) -> None:
    """``kundenwert sample --no-effect``: recorded as a variant; the contact truth has no lift."""
    import json

    import pandas as pd
    from typer.testing import CliRunner

    from kundenwert.cli import app
    from kundenwert.datasets.truth import load_contact_truth

    r = CliRunner().invoke(app, ["sample", str(tmp_path / "null"), "-n", "400", "--seed", "2", "--no-effect"])
    assert r.exit_code == 0, r.output
    design = json.loads((tmp_path / "null" / "truth" / "design.json").read_text())
    assert design["variants"]["effect"] is False
    truth = load_contact_truth(str(tmp_path / "null"))
    contacts = pd.read_csv(tmp_path / "null" / "contacts.csv", dtype=str)
    assert len(truth) == (contacts["direction"] == "outbound").sum() > 100
    assert (truth["p_response_treated"] == truth["p_response_control"]).all()
