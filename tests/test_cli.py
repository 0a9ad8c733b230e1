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
        "sure_things": 0.0,
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


def test_sample_sure_things_writes_customers_who_respond_anyway(tmp_path: Path) -> None:
    """``kundenwert sample --sure-things 0.2``: recorded, the truth names them, and a share out of
    range is refused with the option's name."""
    import json

    from typer.testing import CliRunner

    from kundenwert.cli import app
    from kundenwert.datasets.truth import load_contact_truth, load_truth

    out = tmp_path / "sure"
    r = CliRunner().invoke(app, ["sample", str(out), "-n", "600", "--seed", "2", "--sure-things", "0.2"])
    assert r.exit_code == 0, r.output
    assert json.loads((out / "truth" / "design.json").read_text())["variants"]["sure_things"] == 0.2
    truth = load_truth(str(out)).set_index("customer_id")
    assert 0 < truth["sure_thing"].sum() <= 120
    contacts = load_contact_truth(str(out)).join(truth["sure_thing"], on="customer_id")
    sure = contacts[contacts["sure_thing"]]
    assert len(sure) > 20 and sure["p_response_control"].mean() > 0.25
    bad = CliRunner().invoke(app, ["sample", str(tmp_path / "x"), "-n", "100", "--sure-things", "1.5"])
    assert bad.exit_code == 2 and "--sure-things" in bad.output


def _invoke_broken_summary(
    monkeypatch, tmp_path: Path, raised: BaseException, env: dict[str, str] | None = None
):
    """``kundenwert summary`` with its store read monkeypatched to raise ``raised``."""
    from typer.testing import CliRunner

    import kundenwert.db.store
    from kundenwert.cli import app

    def broken(*args, **kwargs):
        raise raised

    monkeypatch.setenv("KUNDENWERT_HOME", str(tmp_path))
    monkeypatch.delenv("KUNDENWERT_DATABASE_URL", raising=False)
    monkeypatch.delenv("KUNDENWERT_DEBUG", raising=False)
    monkeypatch.setattr(kundenwert.db.store.Store, "__init__", broken)
    return CliRunner().invoke(app, ["summary"], env={"COLUMNS": "300", **(env or {})})


def test_an_unexpected_error_is_one_line_naming_the_command_and_exits_70(monkeypatch, tmp_path: Path) -> None:
    """A bug inside a command: no traceback, one line with the command, the error type and its
    message and how to see more; exit 70 (EX_SOFTWARE), not 1 and not our own errors' 2."""
    r = _invoke_broken_summary(monkeypatch, tmp_path, ValueError("boom [in] the store"))
    assert r.exit_code == 70, r.output
    assert "Traceback" not in r.output
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith(
        "error: kundenwert summary: unexpected error (ValueError: boom [in] the store)"
    )
    assert "this is a bug" in lines[0] and "KUNDENWERT_DEBUG=1" in lines[0]


def test_with_debug_set_the_traceback_is_shown(monkeypatch, tmp_path: Path) -> None:
    r = _invoke_broken_summary(monkeypatch, tmp_path, ValueError("boom"), env={"KUNDENWERT_DEBUG": "1"})
    assert r.exit_code == 70
    assert "Traceback (most recent call last)" in r.stderr and "raise raised" in r.stderr
    assert (
        r.stderr.strip()
        .splitlines()[-1]
        .startswith("error: kundenwert summary: unexpected error (ValueError: boom)")
    )


def test_ctrl_c_is_interrupted_and_exits_130(monkeypatch, tmp_path: Path) -> None:
    r = _invoke_broken_summary(monkeypatch, tmp_path, KeyboardInterrupt())
    assert r.exit_code == 130
    assert r.stderr.strip() == "kundenwert summary: interrupted" and "Traceback" not in r.output


def test_a_subcommand_is_named_in_full_and_exits_pass_through(monkeypatch, tmp_path: Path) -> None:
    """``keys list`` is named as ``kundenwert keys list``; a command's own ``typer.Exit`` keeps its code."""
    import typer
    from typer.testing import CliRunner

    import kundenwert.db.store
    from kundenwert.cli import app

    monkeypatch.setenv("KUNDENWERT_HOME", str(tmp_path))
    monkeypatch.delenv("KUNDENWERT_DATABASE_URL", raising=False)

    def broken(*args, **kwargs):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(kundenwert.db.store.Store, "__init__", broken)
    r = CliRunner().invoke(app, ["keys", "list"], env={"COLUMNS": "300"})
    assert (
        r.exit_code == 70
        and "error: kundenwert keys list: unexpected error (RuntimeError: disk on fire)" in r.stderr
    )

    def exits(*args, **kwargs):
        raise typer.Exit(3)

    monkeypatch.setattr(kundenwert.db.store.Store, "__init__", exits)
    r = CliRunner().invoke(app, ["keys", "list"])
    assert r.exit_code == 3 and r.stderr == ""


def test_an_invalid_setting_is_our_error_not_a_bug(tmp_path: Path) -> None:
    """``KUNDENWERT_BUSY_TIMEOUT=soon``: one ``error:`` line naming the variable, exit 2."""
    env = {
        **os.environ,
        "KUNDENWERT_HOME": str(tmp_path),
        "KUNDENWERT_BUSY_TIMEOUT": "soon",
        "COLUMNS": "300",
    }
    env.pop("KUNDENWERT_DATABASE_URL", None)
    r = subprocess.run(
        [sys.executable, "-m", "kundenwert.cli", "summary"], capture_output=True, text=True, env=env
    )
    assert r.returncode == 2, r.stderr
    assert "Traceback" not in r.stdout + r.stderr
    errors = [
        line for line in r.stderr.splitlines() if line.startswith("error: ")
    ]  # not a library's warnings
    assert errors == [errors[0]] and errors[0].startswith(
        "error: the KUNDENWERT_* settings are not valid: KUNDENWERT_BUSY_TIMEOUT"
    ), r.stderr
