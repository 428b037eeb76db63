"""Request dependencies as ``Annotated`` aliases, so routes read like sentences."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.ext.asyncio import AsyncEngine

from app.config import Settings
from app.runtime import Runtime


async def get_runtime(request: Request) -> Runtime:
    """The process's ``Runtime`` (built by the lifespan)."""
    return request.app.state.runtime


async def get_settings(request: Request) -> Settings:
    """The validated settings."""
    return request.app.state.settings


async def get_engine(request: Request) -> AsyncEngine:
    """The store engine."""
    return request.app.state.runtime.engine


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]
SettingsDep = Annotated[Settings, Depends(get_settings)]
EngineDep = Annotated[AsyncEngine, Depends(get_engine)]
