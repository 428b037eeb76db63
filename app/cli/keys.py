"""``pulseboard keys create|list|revoke``."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeVar

import click

from app.cli.common import announce_store, load_settings
from app.config import Settings

if TYPE_CHECKING:  # imported when a command runs: `pulseboard --help` stays fast
    from app.auth.keys import KeyStore

T = TypeVar("T")


@click.group()
def keys() -> None:
    """API keys: create (shown once), list, revoke."""


async def _with_keys(settings: Settings, action: Callable[[KeyStore], Awaitable[T]]) -> T:
    from app.auth.keys import KeyStore
    from app.clock import SystemClock
    from app.store.db import create_engine_for, migrate_async

    announce_store(settings)
    await migrate_async(settings)
    engine = create_engine_for(settings)
    try:
        return await action(KeyStore(engine, SystemClock()))
    finally:
        await engine.dispose()


def _now_us() -> int:
    from app.clock import SystemClock
    from app.metrics.calendar import to_us

    return to_us(SystemClock().now())


@keys.command("create")
@click.option("--scope", type=click.Choice(["ingest", "read", "display", "admin", "comment"]), required=True)
@click.option("--source", default=None, help="ingest: the one source this key may post")
@click.option("--event-type", "event_types", multiple=True, help="ingest: restrict to these event types (repeatable)")
@click.option("--pack", "pack_names", multiple=True, help="ingest: feed only these packs' event types (repeatable)")
@click.option("--dashboard", default=None, help="display: the one dashboard this key may show")
@click.option("--name", default="", help="a label for lists")
@click.option("--expires-at", default=None, help="RFC 3339 instant with an offset after which the key stops working")
@click.option("--expires-in-days", type=click.FloatRange(min=0, min_open=True), default=None, help="or: days from now")
@click.option("--holder", default=None, help="the person the key belongs to (the author of its notes)")
def keys_create(
    scope: str,
    source: str | None,
    event_types: tuple[str, ...],
    pack_names: tuple[str, ...],
    dashboard: str | None,
    name: str,
    expires_at: str | None,
    expires_in_days: float | None,
    holder: str | None,
) -> None:
    """Create a key and print it alone on the last line (only its hash is kept).  A binding that
    does not fit the scope, an unknown dashboard or event type, or an expiry in the past is refused."""
    from datetime import datetime

    from app.auth.keys import check_binding
    from app.metrics.calendar import to_us
    from app.metrics.pack import load_packs

    settings = load_settings()
    now_us = _now_us()
    expires_us: int | None = None
    if expires_at is not None and expires_in_days is not None:
        raise click.UsageError("give --expires-at or --expires-in-days, not both")
    if expires_at is not None:
        try:
            expires_us = to_us(datetime.fromisoformat(expires_at))
        except ValueError as exc:
            raise click.BadParameter(
                f"{expires_at!r}: {exc} (e.g. 2027-01-31T18:00:00+01:00)", param_hint="--expires-at"
            ) from None
    elif expires_in_days is not None:
        expires_us = now_us + round(expires_in_days * 86_400 * 1_000_000)
    packs = load_packs(settings.packs_dir)
    try:
        check_binding(
            scope,
            source=source,
            event_types=list(event_types) if event_types else None,
            dashboard=dashboard,
            expires_us=expires_us,
            now_us=now_us,
            dashboards=frozenset(d for p in packs.values() for d in p.dashboards),
            known_types=frozenset(t for p in packs.values() for t in p.event_types),
            packs=list(pack_names) if pack_names else None,
            known_packs=frozenset(packs),
        )
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None

    async def action(store: KeyStore) -> tuple[str, dict[str, Any]]:
        return await store.create(
            scope,
            name,
            now_us,
            source,
            list(event_types) or None,
            dashboard,
            expires_us,
            holder=holder,
            packs=list(pack_names) or None,
        )

    try:
        key, info = asyncio.run(_with_keys(settings, action))
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None
    expiry = f", expires {info['expires_at']}" if info["expires_at"] else ""
    click.echo(f"created {info['scope']} key {info['id']} ({info['hint']}{expiry}); it is shown only now:")
    click.echo(key)


@keys.command("list")
def keys_list() -> None:
    """List keys (id, scope, binding, hint, created, last used, revoked)."""
    rows = asyncio.run(_with_keys(load_settings(), lambda store: store.list()))
    if not rows:
        click.echo("no keys (create one with: pulseboard keys create --scope ...)")
        return
    for r in rows:
        binding = r["source"] or r["dashboard"] or "-"
        if r.get("packs"):
            binding += " packs=" + ",".join(r["packs"])
        state = f"revoked {r['revoked_at']}" if r["revoked_at"] else "active"
        click.echo(
            f"{r['id']}  {r['scope']:<7} {binding:<20} {r['hint']:<12} {r['name']:<20} "
            f"created {r['created_at']}  last used {r['last_used_at'] or 'never'}  {state}"
        )


@keys.command("revoke")
@click.argument("key_id")
def keys_revoke(key_id: str) -> None:
    """Revoke a key by id (open screens using it close within seconds)."""
    info = asyncio.run(_with_keys(load_settings(), lambda store: store.revoke(key_id, _now_us())))
    if info is None:
        raise click.ClickException(f"no key {key_id}")
    click.echo(f"revoked {info['scope']} key {info['id']} ({info['hint']})")
