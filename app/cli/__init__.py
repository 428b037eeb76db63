"""The ``pulseboard`` command line (CONTRACT §1): one click group, one module per command group."""

from __future__ import annotations

import logging

import click

from app.cli.demo import demo
from app.cli.keys import keys
from app.cli.replay import replay
from app.cli.serve import migrate, serve
from app.cli.snapshot import snapshot


@click.group()
@click.option("-v", "--verbose", is_flag=True, help="log at DEBUG level")
def main(verbose: bool) -> None:
    """Pulseboard: real-time operations dashboards."""
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )


for command in (serve, migrate, snapshot, keys, replay, demo):
    main.add_command(command)

__all__ = ["main"]
