"""``app.resources`` finds every shipped folder, each holds what it should, and every lookup uses it.

(The same lookups from an installed wheel: tests/test_packaging.py and scripts/wheel-smoke.)
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from app import resources

ROOT = Path(__file__).resolve().parent.parent


def test_checkout_layout():
    """From a checkout the mapped folders are read where they sit, the rest inside ``app/``."""
    assert resources.package_dir() == ROOT / "app"
    assert resources.frontend_dir() == ROOT / "frontend"
    assert resources.migrations_dir() == ROOT / "migrations"
    assert resources.packs_dir() == ROOT / "app" / "packs"
    assert resources.demo_dir() == ROOT / "app" / "demo"
    assert resources.vendor_dir() == ROOT / "app" / "vendor"


def test_pages():
    pages = resources.frontend_dir()
    for page in ("home", "wall", "day", "scorecard", "login", "pair", "pairings"):
        html = (pages / page / "index.html").read_text(encoding="utf-8")
        assert html.lstrip().lower().startswith("<!doctype html>"), page
    assert (pages / "common" / "common.js").is_file()
    assert (pages / "common" / "common.css").is_file()


def test_migrations():
    folder = resources.migrations_dir()
    assert (folder / "env.py").is_file() and (folder / "script.py.mako").is_file()
    versions = sorted(p.name for p in (folder / "versions").glob("*.py"))
    assert versions[0] == "0001_initial.py" and "0008_pairings.py" in versions


def test_packs():
    assert sorted(p.name for p in resources.packs_dir().glob("*.yaml")) == [
        "contact-centre.yaml",
        "itsm.yaml",
        "noc.yaml",
    ]


def test_demo_data():
    folder = resources.demo_dir()
    assert (folder / "SOURCE.md").is_file()
    with gzip.open(folder / "anonymous-bank-excerpt.tsv.gz", "rt", encoding="utf-8") as fh:
        header = fh.readline()
    assert header.split("\t")[:2] == ["vru+line", "call_id"]


def test_vendored_assets():
    folder = resources.vendor_dir()
    manifest = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
    plotly = manifest["plotly"]
    plain = (folder / plotly["file"]).read_bytes()
    assert len(plain) == plotly["bytes"]
    assert gzip.decompress((folder / plotly["gzip_file"]).read_bytes()) == plain
    assert "MIT" in (folder / plotly["license_file"]).read_text(encoding="utf-8")


def test_every_lookup_uses_resources():
    from app.api.routes import FRONTEND_DIR
    from app.cli.demo import DEMO_FILE
    from app.metrics.pack import builtin_packs_dir
    from app.store.db import MIGRATIONS_DIR

    assert FRONTEND_DIR == resources.frontend_dir()
    assert MIGRATIONS_DIR == resources.migrations_dir()
    assert builtin_packs_dir() == resources.packs_dir()
    assert DEMO_FILE.parent == resources.demo_dir() and DEMO_FILE.is_file()


def test_a_missing_folder_names_where_it_looked(monkeypatch, tmp_path):
    """A package without its folders (a broken install) fails with the places looked and the fix."""
    (tmp_path / "app").mkdir()
    monkeypatch.setattr(resources, "package_dir", lambda: tmp_path / "app")
    with pytest.raises(resources.ResourceMissing, match=r"'frontend' folder is missing \(looked in .*app/frontend\)"):
        resources._find("frontend", top_level=True, fix="reinstall")
    # A checkout (hatch_build.py + pyproject.toml beside app/) is looked at too, and wins when the package lacks it.
    (tmp_path / "hatch_build.py").touch()
    (tmp_path / "pyproject.toml").touch()
    (tmp_path / "frontend").mkdir()
    assert resources._find("frontend", top_level=True, fix="reinstall") == tmp_path / "frontend"
    # ...but the package's own copy comes first (an installed wheel).
    (tmp_path / "app" / "frontend").mkdir()
    assert resources._find("frontend", top_level=True, fix="reinstall") == tmp_path / "app" / "frontend"
