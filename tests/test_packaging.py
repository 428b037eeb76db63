"""The sdist and the wheel carry what an installed Pulseboard needs, and ``app.resources`` finds it
inside the installed package, from any directory.

``python -m build`` builds the sdist, then the wheel from the unpacked sdist (so the sdist must be
complete, and no npm is needed for the wheel).  The end-to-end check (install with dependencies,
migrate, serve, curl) is scripts/wheel-smoke, which .ci/run runs.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def dists(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    out = tmp_path_factory.mktemp("dist")
    done = subprocess.run(
        [sys.executable, "-m", "build", "--outdir", str(out), str(ROOT)],
        capture_output=True,
        text=True,
        timeout=280,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    (sdist,) = out.glob("pulseboard-*.tar.gz")
    (wheel,) = out.glob("pulseboard-*.whl")
    return sdist, wheel


def _shipped(folder: str) -> set[str]:
    """Files under the checkout's ``folder`` (relative to it), bytecode caches left out."""
    top = ROOT / folder
    return {p.relative_to(top).as_posix() for p in top.rglob("*") if p.is_file() and "__pycache__" not in p.parts}


def test_wheel_contents(dists):
    _, wheel = dists
    names = set(zipfile.ZipFile(wheel).namelist())
    assert {f"app/frontend/{n}" for n in _shipped("frontend")} <= names
    assert {f"app/migrations/{n}" for n in _shipped("migrations")} <= names
    assert {"app/packs/contact-centre.yaml", "app/packs/itsm.yaml"} <= names
    assert {"app/demo/anonymous-bank-excerpt.tsv.gz", "app/demo/SOURCE.md"} <= names
    manifest = json.loads(zipfile.ZipFile(wheel).read("app/vendor/manifest.json"))
    plotly = manifest["plotly"]
    assert {f"app/vendor/{plotly[k]}" for k in ("file", "gzip_file", "license_file")} <= names
    # Nothing from outside the package, and no top-level folders besides app/.
    assert {n.split("/")[0] for n in names} == {"app", wheel.name.split("-py3")[0] + ".dist-info"}
    assert not any("__pycache__" in n or n.startswith("app/tests") for n in names)


def test_sdist_contents(dists):
    sdist, _ = dists
    with tarfile.open(sdist) as tar:
        names = {n.split("/", 1)[1] for n in tar.getnames() if "/" in n}
    for needed in ("pyproject.toml", "hatch_build.py", "package.json", "package-lock.json", "constraints.txt"):
        assert needed in names
    assert {"frontend/wall/index.html", "migrations/env.py", "app/vendor/manifest.json"} <= names
    assert not any(n.startswith(("node_modules/", "data/", "tests/", "bench/", ".venv/")) for n in names)


def test_installed_wheel_finds_its_folders_from_any_directory(dists, tmp_path):
    """The wheel unpacked by pip (no dependencies needed for this check) and imported from an empty
    folder: every resource is inside the installed ``app`` package."""
    _, wheel = dists
    site = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target", str(site), str(wheel)],
        check=True,
        timeout=120,
    )
    empty = tmp_path / "empty"
    empty.mkdir()
    script = (
        "import json; from app import resources as r; "
        "print(json.dumps({f: str(getattr(r, f)()) for f in "
        "('package_dir', 'frontend_dir', 'migrations_dir', 'packs_dir', 'demo_dir', 'vendor_dir')}))"
    )
    env = {**os.environ, "PYTHONPATH": str(site)}
    found = json.loads(
        subprocess.run(
            [sys.executable, "-c", script], cwd=empty, env=env, capture_output=True, text=True, check=True
        ).stdout
    )
    package = site / "app"
    assert found == {
        "package_dir": str(package),
        "frontend_dir": str(package / "frontend"),
        "migrations_dir": str(package / "migrations"),
        "packs_dir": str(package / "packs"),
        "demo_dir": str(package / "demo"),
        "vendor_dir": str(package / "vendor"),
    }
    assert (package / "frontend" / "wall" / "index.html").is_file()
    assert (package / "migrations" / "versions" / "0001_initial.py").is_file()
