"""Where the files Pulseboard ships beside its code live: pages, migrations, packs, demo data,
vendored browser assets.

Every lookup of these folders goes through this module, found with ``importlib.resources``
from the ``app`` package, so the same code works from an installed wheel and from a checkout:

=============  ==========================  =================================
folder         installed wheel             checkout (editable install)
=============  ==========================  =================================
pages          ``app/frontend/``           ``frontend/``
migrations     ``app/migrations/``         ``migrations/``
KPI packs      ``app/packs/``              ``app/packs/``
demo data      ``app/demo/``               ``app/demo/``
vendored JS    ``app/vendor/``             ``app/vendor/`` (made by ``scripts/bootstrap``)
=============  ==========================  =================================

A wheel maps the checkout's top-level ``frontend/`` and ``migrations/`` into the package at
build time (``hatch_build.py``); in a checkout they are read where they are, beside ``app/``
(recognised by ``hatch_build.py`` next to it, so a stray ``site-packages/frontend`` of some other
distribution is never taken).  The package must be installed as files (pip does), not zipped.
"""

from __future__ import annotations

import functools
from importlib.resources import files
from pathlib import Path


class ResourceMissing(FileNotFoundError):
    """A shipped folder is not where the package or the checkout keeps it (a broken install)."""


def package_dir() -> Path:
    """The ``app`` package's folder on disk.

    Raises:
        ResourceMissing: the package is not installed as plain files (e.g. imported from a zip).
    """
    root = files("app")
    if not isinstance(root, Path):
        raise ResourceMissing(f"Pulseboard must be installed as files, not imported from {root!r}")
    return root


def _checkout_dir() -> Path | None:
    """The checkout ``app/`` was imported from, or ``None`` for an installed wheel."""
    top = package_dir().parent
    return top if (top / "hatch_build.py").is_file() and (top / "pyproject.toml").is_file() else None


def _find(name: str, *, top_level: bool, fix: str) -> Path:
    candidates = [package_dir() / name]
    checkout = _checkout_dir()
    if top_level and checkout is not None:
        candidates.append(checkout / name)
    for candidate in candidates:
        if candidate.is_dir():
            return candidate
    looked = ", ".join(str(c) for c in candidates)
    raise ResourceMissing(f"Pulseboard's {name!r} folder is missing (looked in {looked}): {fix}")


_REINSTALL = "reinstall Pulseboard (pip install pulseboard-*.whl), or run scripts/bootstrap in a checkout"


@functools.cache
def frontend_dir() -> Path:
    """The pages, their scripts and styles (served at ``/static``, pages at their routes)."""
    return _find("frontend", top_level=True, fix=_REINSTALL)


@functools.cache
def migrations_dir() -> Path:
    """The Alembic environment (``env.py``, ``script.py.mako``, ``versions/``)."""
    return _find("migrations", top_level=True, fix=_REINSTALL)


@functools.cache
def packs_dir() -> Path:
    """The built-in KPI packs (``*.yaml``)."""
    return _find("packs", top_level=False, fix=_REINSTALL)


@functools.cache
def demo_dir() -> Path:
    """The demo's data (the Anonymous Bank excerpt and its ``SOURCE.md``)."""
    return _find("demo", top_level=False, fix=_REINSTALL)


def noc_data_dir() -> Path:
    """The real NOC data sets of a checkout (``data/noc-alarms/``), for ``pulseboard demo --pack noc``.

    Raises:
        ResourceMissing: not a checkout (a wheel does not carry ``data/``): give ``--noc-data DIR``.
    """
    checkout = _checkout_dir()
    folder = checkout / "data" / "noc-alarms" if checkout is not None else None
    if folder is None or not folder.is_dir():
        raise ResourceMissing(
            "the NOC data sets are in a checkout's data/noc-alarms/ (an installed wheel has no data/): "
            "pass --noc-data DIR holding pcic2021-wireless-alarms.csv.gz, github-incidents.csv and "
            "github-component-status.csv"
        )
    return folder


@functools.cache
def vendor_dir() -> Path:
    """Third-party browser assets copied from npm at build time (``manifest.json`` names them)."""
    return _find(
        "vendor",
        top_level=False,
        fix="in a checkout run scripts/bootstrap (npm ci, then hatch_build.py makes app/vendor/); a wheel carries it",
    )
