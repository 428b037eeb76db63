"""Request dependencies as ``Annotated`` aliases, so routes read like sentences."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.ext.asyncio import AsyncEngine

from app.config import Settings
from app.runtime import Runtime


async def get_runtime(request: Request) -> Runtime:
    """The process's ``Runtime`` (built by the lifespan).

    Raises:
        RuntimeError: the app is served without its lifespan (nothing is connected).
    """
    runtime = getattr(request.app.state, "runtime", None)
    if not isinstance(runtime, Runtime):
        raise RuntimeError("no Runtime: the app's lifespan has not started (serve it with lifespan='on')")
    return runtime


async def get_settings(request: Request) -> Settings:
    """The validated settings (set by ``create_app``)."""
    settings = request.app.state.settings
    if not isinstance(settings, Settings):
        raise RuntimeError("no Settings on the app: build it with app.main.create_app")
    return settings


async def get_engine(request: Request) -> AsyncEngine:
    """The store engine."""
    return (await get_runtime(request)).engine


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]
SettingsDep = Annotated[Settings, Depends(get_settings)]
EngineDep = Annotated[AsyncEngine, Depends(get_engine)]
