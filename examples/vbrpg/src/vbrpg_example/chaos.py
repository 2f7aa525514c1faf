"""Injected noise for tests of the watchdog: single 503s, a slow health check, slow API answers, and a health
check that answers 200 but says it is degraded.

Off unless the service runs with --chaos. A watchdog must not roll back on one bad probe or a latency blip;
this is how tests produce those blips on demand. The state lives in one object owned by the app.
"""

import asyncio
import threading

from fastapi import APIRouter
from pydantic import BaseModel, Field


class ChaosSettings(BaseModel):
    health_503_count: int = Field(default=0, ge=0, description="answer this many health checks with 503")
    health_delay_seconds: float = Field(default=0.0, ge=0, le=600, description="delay every health check")
    api_delay_seconds: float = Field(default=0.0, ge=0, le=600, description="delay every /api request")
    health_degraded: bool = Field(
        default=False, description='answer health checks 200 with {"status": "degraded"} until cleared'
    )


class ChaosState:
    """The current settings; the 503 budget is spent one health check at a time."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._settings = ChaosSettings()

    @property
    def settings(self) -> ChaosSettings:
        with self._lock:
            return self._settings.model_copy()

    def replace(self, settings: ChaosSettings) -> None:
        with self._lock:
            self._settings = settings.model_copy()

    def take_health_503(self) -> bool:
        """Return True (and spend one) if the next health check should fail."""
        with self._lock:
            if self._settings.health_503_count == 0:
                return False
            self._settings.health_503_count -= 1
            return True

    async def delay_health(self) -> None:
        await _sleep(self.settings.health_delay_seconds)

    async def delay_api(self) -> None:
        await _sleep(self.settings.api_delay_seconds)


async def _sleep(seconds: float) -> None:
    if seconds > 0:
        await asyncio.sleep(seconds)


def build_chaos_router(state: ChaosState) -> APIRouter:
    """Return GET/POST/DELETE /chaos; POST replaces all settings (omitted ones become 0)."""
    router = APIRouter(prefix="/chaos", tags=["chaos"])

    @router.get("")
    def show() -> ChaosSettings:
        return state.settings

    @router.post("")
    def inject(settings: ChaosSettings) -> ChaosSettings:
        state.replace(settings)
        return state.settings

    @router.delete("")
    def clear() -> ChaosSettings:
        state.replace(ChaosSettings())
        return state.settings

    return router
