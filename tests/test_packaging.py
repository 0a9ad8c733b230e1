"""The wheel is complete: installed (not editable) into a fresh virtualenv, kundenwert finds its
packaged defaults and its commands run from any folder."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import venv
from pathlib import Path

import pytest

from kundenwert.db.migrate import HEAD

ROOT = Path(__file__).resolve().parents[1]


def _run(cmd: list[str], cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if k != "PYTHONPATH" and not k.startswith("KUNDENWERT_")}
    done = subprocess.run(cmd, cwd=cwd, env={**clean, **env}, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, f"{' '.join(cmd)} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh virtualenv with the built wheel installed; returns its bin folder.

    The dependencies are taken from the test run's own environment (its site-packages is put on
    the new environment's path as a plain entry, so its editable ``kundenwert`` finder is *not*
    active): only kundenwert itself comes from the wheel, and installing stays fast.
    """
    base = tmp_path_factory.mktemp("wheel")
    src = base / "src"
    src.mkdir()
    shutil.copytree(ROOT / "kundenwert", src / "kundenwert", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    dist = base / "dist"
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", str(dist), str(src)], base)
    wheel = next(dist.glob("kundenwert-*.whl"))
    env_dir = base / "venv"
    venv.create(env_dir, with_pip=False)
    bin_dir = env_dir / "bin"
    new_site = next((env_dir / "lib").glob("python*/site-packages"))
    (new_site / "zz_test_deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    _run(
        [
            sys.executable,
            "-m",
            "pip",
            "--python",
            str(bin_dir / "python"),
            "install",
            "--no-deps",
            "--quiet",
            str(wheel),
        ],
        base,
    )
    return bin_dir


def test_the_wheel_holds_the_defaults_and_the_commands_run_from_anywhere(
    installed: Path, tmp_path: Path
) -> None:
    probe = (
        "import kundenwert, kundenwert.training.config as c, kundenwert.serving.catalog as k\n"
        "cfg = c.load_config(); cat = k.load_catalog()\n"
        "print(kundenwert.__file__); print(sorted(cfg.models)); print(len(cat.actions))\n"
    )
    done = _run([str(installed / "python"), "-c", probe], tmp_path)
    where, models, actions = done.stdout.splitlines()
    assert where.startswith(str(installed.parent)), f"kundenwert was imported from {where}, not the wheel"
    assert "churn" in models and int(actions) > 0
    helped = _run([str(installed / "kundenwert"), "train", "--help"], tmp_path)
    assert "--config" in helped.stdout


def test_actions_env_var_names_another_catalog(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from kundenwert.errors import ConfigurationError
    from kundenwert.serving.catalog import DEFAULT_CATALOG, load_catalog

    mine = tmp_path / "mine.toml"
    mine.write_text(DEFAULT_CATALOG.read_text(encoding="utf-8"))
    monkeypatch.setenv("KUNDENWERT_ACTIONS", str(mine))
    assert load_catalog().actions == load_catalog(DEFAULT_CATALOG).actions
    mine.write_bytes(b"\xff\xfe not toml")
    with pytest.raises(ConfigurationError, match="mine.toml is not valid TOML"):
        load_catalog()


def test_the_wheel_ships_the_migrations(installed: Path, tmp_path: Path) -> None:
    """A store made and upgraded by the installed package: the Alembic files are in the wheel."""
    home = str(tmp_path / "var")
    fresh = _run([str(installed / "kundenwert"), "db", "current"], tmp_path, KUNDENWERT_HOME=home)
    assert "no tables yet" in fresh.stdout + fresh.stderr
    _run([str(installed / "kundenwert"), "db", "upgrade"], tmp_path, KUNDENWERT_HOME=home)
    done = _run([str(installed / "kundenwert"), "db", "current"], tmp_path, KUNDENWERT_HOME=home)
    assert f"{HEAD} (head)" in done.stdout + done.stderr
