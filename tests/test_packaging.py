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
    assert "app/docs/CONTRACT.md" in names  # served at /docs/contract by an installed server
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


def _fake_npm_tree(root: Path, version: str, body: bytes) -> None:
    """A project root with a lockfile pinning plotly.js-dist-min ``version`` and that version in
    node_modules/ (so no npm is needed), its "library" being ``body``."""
    lock = {
        "name": "x",
        "lockfileVersion": 3,
        "packages": {"node_modules/plotly.js-dist-min": {"version": version, "integrity": f"sha512-fake-{version}"}},
    }
    (root / "package-lock.json").write_text(json.dumps(lock), encoding="utf-8")
    package = root / "node_modules" / "plotly.js-dist-min"
    package.mkdir(parents=True, exist_ok=True)
    (package / "package.json").write_text(json.dumps({"version": version}), encoding="utf-8")
    (package / "plotly.min.js").write_bytes(body)
    (package / "LICENSE").write_text("The MIT License", encoding="utf-8")


def test_vendoring_follows_the_lockfile(tmp_path, monkeypatch):
    import gzip

    import hatch_build

    monkeypatch.setenv("PATH", str(tmp_path / "no-npm-here"))
    _fake_npm_tree(tmp_path, "9.9.9", b"/* v9.9.9 */" * 100)
    vendor = tmp_path / "app" / "vendor"

    manifest = hatch_build.vendor_assets(tmp_path)
    assert manifest["plotly"]["file"] == "plotly-9.9.9.min.js"
    assert manifest["plotly"]["npm_integrity"] == "sha512-fake-9.9.9"
    assert (vendor / "plotly-9.9.9.min.js").read_bytes() == b"/* v9.9.9 */" * 100
    assert gzip.decompress((vendor / "plotly-9.9.9.min.js.gz").read_bytes()) == b"/* v9.9.9 */" * 100
    made = (vendor / "plotly-9.9.9.min.js.gz").read_bytes()

    # Current: nothing is rewritten, even with node_modules gone.
    (tmp_path / "node_modules" / "plotly.js-dist-min" / "plotly.min.js").unlink()
    assert hatch_build.vendor_assets(tmp_path) == manifest
    # A damaged copy is not current; without node_modules and npm it cannot be remade, and says how.
    (vendor / "plotly-9.9.9.min.js").write_bytes(b"damaged")
    with pytest.raises(hatch_build.VendorError, match="npm is not on PATH"):
        hatch_build.vendor_assets(tmp_path)
    _fake_npm_tree(tmp_path, "9.9.9", b"/* v9.9.9 */" * 100)
    assert hatch_build.vendor_assets(tmp_path) == manifest
    assert (vendor / "plotly-9.9.9.min.js.gz").read_bytes() == made  # reproducible (gzip mtime 0)

    # A new pinned version replaces the old files.
    _fake_npm_tree(tmp_path, "9.9.10", b"/* v9.9.10 */")
    assert hatch_build.vendor_assets(tmp_path)["plotly"]["file"] == "plotly-9.9.10.min.js"
    assert sorted(p.name for p in vendor.iterdir()) == [
        "manifest.json",
        "plotly-9.9.10.min.js",
        "plotly-9.9.10.min.js.gz",
        "plotly.js-dist-min.LICENSE",
    ]
