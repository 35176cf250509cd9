"""Attendance (员工考勤): check-in/out through the API, a person's log, and who is on duty where."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query
from pydantic import AfterValidator, BaseModel, Field

from api import workorder_actions as actions
from api.deps import Conn, Origin, Reader, SyncPool, in_thread, require, scoped_sites
from api.errors import ApiError
from api.params import BigId, SiteFilter, _aware
from api.scope import Principal

router = APIRouter(tags=["attendance"])
StaffId = Annotated[str, Path(pattern=r"^[A-Za-z0-9_.-]{1,64}$")]
TimeQ = Annotated[datetime | None, AfterValidator(_aware)]
FUTURE_SLACK = timedelta(minutes=5)


class CheckBody(BaseModel):
    site_id: str = Field(pattern=r"^[a-z0-9_-]{1,64}$")
    at: Annotated[datetime | None, AfterValidator(_aware)] = Field(
        None, description="when (default now); at most 5 minutes ahead")


class AttendancePublic(BaseModel):
    id: int
    staff_id: str
    site_id: str
    kind: str
    at: datetime
    source: str


class AttendanceEntry(BaseModel):
    id: int
    site_id: str
    kind: str
    at: datetime
    source: str
    device: str | None
    actor: str


class DutyPublic(BaseModel):
    site_id: str
    staff_id: str
    name: str
    role: str
    grids: list[str]
    skills: list[str]
    on_shift: bool
    attendance: str
    on_leave: bool
    open_orders: int
    available: bool


async def _record(pool: SyncPool, user: Reader, staff_id: str, kind: str, body: CheckBody, origin: str) -> AttendancePublic:
    if body.at is not None and body.at > datetime.now(UTC) + FUTURE_SLACK:
        raise ApiError(422, "invalid", "at: may not be in the future")
    row = await in_thread(pool, actions.attend, user, staff_id, kind, site_id=body.site_id, at=body.at, ip=origin)
    return AttendancePublic(**row)


@router.post("/staff/{staff_id}/check-in", response_model=AttendancePublic, status_code=201)
async def check_in(staff_id: StaffId, body: CheckBody, pool: SyncPool, origin: Origin, user: Reader) -> AttendancePublic:
    """Yourself (any role, as your linked staff member), or anyone in scope (admin, operator)."""
    return await _record(pool, user, staff_id, "in", body, origin)


@router.post("/staff/{staff_id}/check-out", response_model=AttendancePublic, status_code=201)
async def check_out(staff_id: StaffId, body: CheckBody, pool: SyncPool, origin: Origin, user: Reader) -> AttendancePublic:
    return await _record(pool, user, staff_id, "out", body, origin)


@router.get("/staff/{staff_id}/attendance", response_model=list[AttendanceEntry])
async def attendance(staff_id: StaffId, pool: SyncPool, user: Reader,
                     start: Annotated[TimeQ, Query(alias="from", description="default: 7 days ago")] = None,
                     end: Annotated[TimeQ, Query(alias="to")] = None) -> list[AttendanceEntry]:
    """Check-ins and check-outs (API and badge), oldest first."""
    since = start or datetime.now(UTC) - timedelta(days=7)
    rows = await in_thread(pool, actions.attendance_log, user, staff_id, since=since, until=end)
    return [AttendanceEntry(**r) for r in rows]


@router.get("/duty", response_model=list[DutyPublic])
async def duty(conn: Conn, user: Reader, site: SiteFilter = None,
               available: Annotated[bool | None, Query(description="only those dispatch would pick now")] = None,
               ) -> list[DutyPublic]:
    """Who is on duty where, now (view staff_duty_now: shift, attendance, leave, open orders)."""
    sites = scoped_sites(user, site)
    rows = await (await conn.execute(
        """SELECT * FROM staff_duty_now
            WHERE (%(sites)s::text[] IS NULL OR site_id = ANY(%(sites)s))
              AND (%(available)s::boolean IS NULL OR available = %(available)s)
            ORDER BY site_id, role, staff_id""",
        {"sites": sites, "available": available},
    )).fetchall()
    return [DutyPublic(**r) for r in rows]


class LeaveCreate(BaseModel):
    starts_at: Annotated[datetime, AfterValidator(_aware)]
    ends_at: Annotated[datetime, AfterValidator(_aware)]
    reason: str | None = Field(None, max_length=500)


class LeavePublic(BaseModel):
    id: int
    staff_id: str
    starts_at: datetime
    ends_at: datetime
    reason: str | None
    created_by: str
    created_at: datetime
    cancelled_at: datetime | None


LeaveManager = Annotated[Principal, Depends(require("leave.manage"))]


@router.post("/staff/{staff_id}/leave", response_model=LeavePublic, status_code=201)
async def add_leave(staff_id: StaffId, body: LeaveCreate, pool: SyncPool, origin: Origin, user: LeaveManager) -> LeavePublic:
    """Leave (admin, operator): dispatch skips the person while it covers the instant."""
    row = await in_thread(pool, actions.record_leave, user, staff_id, starts_at=body.starts_at, ends_at=body.ends_at,
                          reason=body.reason, ip=origin)
    return LeavePublic(**row)


@router.get("/staff/{staff_id}/leave", response_model=list[LeavePublic])
async def list_leave(staff_id: StaffId, pool: SyncPool, user: Reader) -> list[LeavePublic]:
    """Newest first, cancelled ones included; yourself, or anyone in scope for admin/operator."""
    return [LeavePublic(**r) for r in await in_thread(pool, actions.leave_list, user, staff_id)]


@router.post("/staff/leave/{leave_id}/cancel", status_code=204)
async def cancel_leave(leave_id: BigId, pool: SyncPool, origin: Origin, user: LeaveManager) -> None:
    await in_thread(pool, actions.cancel_leave, user, leave_id, ip=origin)
