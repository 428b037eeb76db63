"""Build step: the folders and browser assets that go into the ``app`` package beside its code.

The repository keeps its top-level layout (``app/``, ``frontend/``, ``migrations/``); a built
wheel has them all inside the package, where ``app.resources`` finds them:

===========================  ==========================================================
in the repository            in the wheel
===========================  ==========================================================
``frontend/``                ``app/frontend/``   (pages, scripts, styles)
``migrations/``              ``app/migrations/`` (Alembic environment and versions)
``docs/CONTRACT.md``          ``app/docs/CONTRACT.md`` (served at ``/docs/contract``)
``app/packs/``, ``app/demo``  the same (package data)
npm ``plotly.js-dist-min``   ``app/vendor/``     (made here, see below)
===========================  ==========================================================

The chart library comes from the npm registry, pinned in ``package.json`` / ``package-lock.json``.
``vendor_assets`` copies it from ``node_modules/`` into ``app/vendor/`` under a versioned name
(``plotly-4.1.2.min.js``), writes a gzip copy beside it (served as is to clients that accept
gzip) and ``manifest.json`` (what the server reads to know the URL), and keeps the package's
licence.  ``app/vendor/`` is generated and ignored by git; it is made again only when it does
not match ``package-lock.json`` (version and npm integrity), running ``npm ci`` first when
``node_modules/`` is missing or holds another version.  An sdist carries ``app/vendor/``, so a
wheel built from it needs no npm.

Run by hatchling as a build hook (``[tool.hatch.build.targets.*.hooks.custom]`` in
``pyproject.toml``) for the sdist, the wheel and editable installs, and by ``scripts/bootstrap``
as ``python hatch_build.py`` in a checkout.  Standard library only (it runs in pip's isolated
build environment).
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

try:
    from hatchling.builders.hooks.plugin.interface import BuildHookInterface
except ModuleNotFoundError:  # run as a script by scripts/bootstrap: no hatchling in the project's venv
    BuildHookInterface = None  # type: ignore[assignment,misc]

VENDOR_DIR = Path("app") / "vendor"
MANIFEST = "manifest.json"
# manifest key -> (npm package, file in that package, versioned name in app/vendor/)
NPM_ASSETS = {
    "plotly": ("plotly.js-dist-min", "plotly.min.js", "plotly-{version}.min.js"),
}
# Top-level folders mapped into the package in a standard wheel (editable installs read the checkout).
PACKAGE_FOLDERS = {
    "frontend": "app/frontend",
    "migrations": "app/migrations",
    "docs/CONTRACT.md": "app/docs/CONTRACT.md",  # served at /docs/contract (app/api/docs.py)
}


class VendorError(RuntimeError):
    """The browser assets cannot be vendored (no npm, or the npm files are not what the lockfile says)."""


def _locked(root: Path) -> dict[str, dict[str, str]]:
    """``{npm package: {"version", "integrity"}}`` for the assets, from ``package-lock.json``."""
    lock = json.loads((root / "package-lock.json").read_text(encoding="utf-8"))
    locked = {}
    for package, _file, _name in NPM_ASSETS.values():
        entry = lock.get("packages", {}).get(f"node_modules/{package}")
        if entry is None:
            raise VendorError(f"package-lock.json has no {package}: run `npm install` after editing package.json")
        locked[package] = {"version": entry["version"], "integrity": entry["integrity"]}
    return locked


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _vendored_is_current(root: Path, locked: dict[str, dict[str, str]]) -> bool:
    """``app/vendor/`` holds, intact, exactly the versions ``package-lock.json`` pins."""
    manifest_path = root / VENDOR_DIR / MANIFEST
    if not manifest_path.is_file():
        return False
    manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    for key, (package, _file, _name) in NPM_ASSETS.items():
        entry = manifest.get(key)
        if entry is None or entry.get("npm_integrity") != locked[package]["integrity"]:
            return False
        plain, packed = root / VENDOR_DIR / entry["file"], root / VENDOR_DIR / entry["gzip_file"]
        if not (plain.is_file() and packed.is_file()) or _sha256(plain) != entry["sha256"]:
            return False
    return True


def _installed_version(root: Path, package: str) -> str | None:
    meta = root / "node_modules" / package / "package.json"
    if not meta.is_file():
        return None
    return json.loads(meta.read_text(encoding="utf-8")).get("version")


def ensure_node_modules(root: Path) -> None:
    """Run ``npm ci`` when ``node_modules/`` is missing, incomplete or holds other versions than the lockfile.

    Raises:
        VendorError: npm is not on PATH, or ``npm ci`` failed.
    """
    locked = _locked(root)
    if all(
        _installed_version(root, package) == locked[package]["version"]
        and (root / "node_modules" / package / source_name).is_file()
        for package, source_name, _name in NPM_ASSETS.values()
    ):
        return
    npm = shutil.which("npm")
    if npm is None:
        raise VendorError(
            "app/vendor/ is missing or older than package-lock.json and npm is not on PATH: install Node.js 20 "
            "and npm, then run scripts/bootstrap (the chart library comes from the npm registry)"
        )
    print("npm ci (chart library, package-lock.json)", file=sys.stderr)
    done = subprocess.run([npm, "ci", "--ignore-scripts", "--no-audit", "--no-fund"], cwd=root, check=False)
    if done.returncode != 0:
        raise VendorError(f"`npm ci` failed in {root} (exit {done.returncode})")


def vendor_assets(root: Path) -> dict[str, Any]:
    """Make ``app/vendor/`` match ``package-lock.json`` (see the module docstring).

    Returns the manifest: ``{key: {"npm_package", "version", "npm_integrity", "file", "gzip_file",
    "license_file", "sha256", "bytes", "gzip_bytes"}}`` (file names relative to ``app/vendor/``).

    Raises:
        VendorError: the assets are stale and cannot be made (no npm, failed ``npm ci``, a
            ``node_modules`` file that does not match the lockfile).
    """
    root = root.resolve()
    locked = _locked(root)
    out = root / VENDOR_DIR
    if _vendored_is_current(root, locked):
        return json.loads((out / MANIFEST).read_text(encoding="utf-8"))
    ensure_node_modules(root)
    out.mkdir(parents=True, exist_ok=True)
    manifest: dict[str, Any] = {}
    for key, (package, source_name, pattern) in NPM_ASSETS.items():
        version = locked[package]["version"]
        if _installed_version(root, package) != version:
            raise VendorError(f"node_modules/{package} is not version {version} after npm ci")
        source = root / "node_modules" / package / source_name
        data = source.read_bytes()
        name = pattern.format(version=version)
        (out / name).write_bytes(data)
        # mtime=0: the same bytes at every build (reproducible wheels, stable ETags).
        packed = gzip.compress(data, compresslevel=9, mtime=0)
        (out / f"{name}.gz").write_bytes(packed)
        license_name = f"{package}.LICENSE"
        shutil.copyfile(root / "node_modules" / package / "LICENSE", out / license_name)
        manifest[key] = {
            "npm_package": package,
            "version": version,
            "npm_integrity": locked[package]["integrity"],
            "file": name,
            "gzip_file": f"{name}.gz",
            "license_file": license_name,
            "sha256": hashlib.sha256(data).hexdigest(),
            "bytes": len(data),
            "gzip_bytes": len(packed),
        }
        print(f"vendored {package} {version} as app/vendor/{name} (+ .gz)", file=sys.stderr)
    keep = {MANIFEST} | {n for e in manifest.values() for n in (e["file"], e["gzip_file"], e["license_file"])}
    for stale in out.iterdir():
        if stale.name not in keep:
            stale.unlink()
    tmp = out / f"{MANIFEST}.tmp"
    tmp.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    os.replace(tmp, out / MANIFEST)  # last, so a manifest always names files that exist
    return manifest


if BuildHookInterface is not None:

    class PackageFilesHook(BuildHookInterface):
        """hatchling build hook: vendor the browser assets; map the top-level folders into a wheel."""

        PLUGIN_NAME = "custom"

        def initialize(self, version: str, build_data: dict[str, Any]) -> None:
            vendor_assets(Path(self.root))
            if self.target_name == "wheel" and version == "standard":
                build_data["force_include"].update(PACKAGE_FOLDERS)


if __name__ == "__main__":
    try:
        vendor_assets(Path(__file__).parent)
    except VendorError as exc:
        sys.exit(f"hatch_build.py: {exc}")
