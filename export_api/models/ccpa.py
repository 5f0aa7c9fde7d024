"""The answer of `DELETE /ccpa/users/{userId}` (SPEC §7)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field


class CcpaBlock(BaseModel):
    """The exports of one outcome: how many, by type, and which."""

    total: int = Field(ge=0)
    byType: dict[str, int]
    exports: list[dict[str, Any]]


class CcpaSummary(BaseModel):
    """What was deleted, skipped as exempt, already deleted, in flight, failed, resumed."""

    userId: str
    requestedBy: str
    auditId: str
    requestedAt: datetime
    complete: bool
    message: str = Field(description="One plain sentence.")
    deleted: CcpaBlock | None = None
    skipped: CcpaBlock | None = None
    alreadyDeleted: CcpaBlock | None = None
    inFlight: CcpaBlock | None = None
    failed: CcpaBlock | None = None
    resumed: CcpaBlock | None = None
