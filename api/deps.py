"""FastAPI dependencies: the long-lived clients created in the app's lifespan."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from temporalio.client import Client

from api.events import ChatEventHub
from common.settings import Settings
from storage import ChatStore, LimitsStore


def get_settings_dep(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def get_temporal(request: Request) -> Client:
    client: Client = request.app.state.temporal
    return client


def get_store(request: Request) -> ChatStore:
    store: ChatStore = request.app.state.store
    return store


def get_hub(request: Request) -> ChatEventHub:
    hub: ChatEventHub = request.app.state.hub
    return hub


def get_limits(request: Request) -> LimitsStore:
    limits: LimitsStore = request.app.state.limits
    return limits


SettingsDep = Annotated[Settings, Depends(get_settings_dep)]
TemporalDep = Annotated[Client, Depends(get_temporal)]
StoreDep = Annotated[ChatStore, Depends(get_store)]
HubDep = Annotated[ChatEventHub, Depends(get_hub)]
LimitsDep = Annotated[LimitsStore, Depends(get_limits)]
