"""The ``pulseboard`` command line (CONTRACT §1): one click group, one module per command group.

Output is quiet by default: one-shot commands (``migrate``, ``keys``, ``snapshot``, ``replay``)
log warnings only, servers (``serve``, ``demo``) log at INFO; ``-v`` adds INFO lines (and
the scheduler's per-job lines), ``-vv`` DEBUG and the migration tool's own (alembic) lines.
Every command that touches a store prints ``store: <url>, zone: <tz>`` to stderr first.
"""

from __future__ import annotations

import logging

import click

from app.cli.demo import demo
from app.cli.keys import keys
from app.cli.replay import replay
from app.cli.rollups import packs, rollups
from app.cli.serve import migrate, serve
from app.cli.snapshot import snapshot

SERVERS = ("serve", "demo")  # long-running: their INFO log lines are their output


def log_level(verbose: int, command: str | None) -> int:
    """The root log level for ``-v`` given ``verbose`` times before ``command``."""
    if verbose >= 2:
        return logging.DEBUG
    if verbose == 1 or command in SERVERS:
        return logging.INFO
    return logging.WARNING


@click.group()
@click.option("-v", "--verbose", count=True, help="more log output: -v INFO, -vv DEBUG (and the migration tool's)")
@click.pass_context
def main(ctx: click.Context, verbose: int) -> None:
    """Pulseboard: real-time operations dashboards."""
    logging.basicConfig(
        level=log_level(verbose, ctx.invoked_subcommand), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    if verbose < 2:  # alembic logs a line per plugin when imported: noise for every command
        logging.getLogger("alembic").setLevel(logging.WARNING)
    if verbose < 1:  # APScheduler logs two lines per job run (cuts, restatement passes)
        logging.getLogger("apscheduler").setLevel(logging.WARNING)


for command in (serve, migrate, snapshot, keys, replay, demo, rollups, packs):
    main.add_command(command)

__all__ = ["main"]
