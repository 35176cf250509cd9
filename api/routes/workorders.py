"""Work orders: list, read, create (resident requests and manual orders), assign and move them
through the state machine, evidence, resident rating.

Reads run on the request's async connection. Changes call the synchronous hub.workorders
functions (which write audit_log and the notification outbox) in a worker thread on a sync
pooled connection, behind the caller checks in api.workorder_actions (same transaction).
"""

from __future__ import annotations

from dataclasses import asdict
from datetime import date, datetime
from enum import StrEnum
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Response
from pydantic import BaseModel, Field

from api import workorder_actions as actions
from api.deps import Conn, Origin, Reader, SyncPool, in_thread, require
from api.errors import ApiError, forbidden
from api.pagination import Page, decode_cursor, encode_cursor
from api.params import BigId, Cursor, Limit, SiteFilter
from api.scope import Principal
from hub.workorders.model import RESIDENT_KINDS, Transition, WorkOrder

router = APIRouter(tags=["work orders"])

STAFF_ID = r"^[A-Za-z0-9_.-]{1,64}$"
TEXT_ID = r"^[A-Za-z0-9_.-]{1,64}$"


class Kind(StrEnum):
    alarm = "alarm"
    repair = "repair"
    complaint = "complaint"
    praise = "praise"
    maintenance = "maintenance"


class NewKind(StrEnum):
    """Kinds the API creates: resident requests (报修, 投诉, 表扬) and planned/manual maintenance.
    Alarm orders are opened by dispatch from alarms."""

    repair = "repair"
    complaint = "complaint"
    praise = "praise"
    maintenance = "maintenance"


class Priority(StrEnum):
    p1 = "p1"
    p2 = "p2"
    p3 = "p3"
    p4 = "p4"


class State(StrEnum):
    created = "created"
    assigned = "assigned"
    accepted = "accepted"
    on_site = "on_site"
    resolved = "resolved"
    verified = "verified"
    closed = "closed"
    cancelled = "cancelled"
    reopened = "reopened"


class WorkOrderPublic(BaseModel):
    id: int
    site_id: str
    kind: str
    priority: str
    state: str
    title: str
    description: str | None
    alarm_id: int | None
    policy_rule: str | None
    skill: str | None
    device_id: int | None
    building_id: str | None
    grid_id: str | None
    location: str | None
    reporter: str | None
    assignee: str | None
    assigned_reason: str | None
    sla_start: datetime
    accept_due: datetime | None
    arrive_due: datetime | None
    resolve_due: datetime | None
    due_date: date | None
    escalation_level: int
    reopen_count: int
    created_at: datetime
    assigned_at: datetime | None
    accepted_at: datetime | None
    on_site_at: datetime | None
    resolved_at: datetime | None
    verified_at: datetime | None
    closed_at: datetime | None
    cancelled_at: datetime | None
    override_reason: str | None
    rating: int | None
    rating_comment: str | None


class TransitionPublic(BaseModel):
    at: datetime
    from_state: str | None
    to_state: str
    actor: str
    origin: str
    assignee: str | None
    note: str | None
    override_reason: str | None


class EvidencePublic(BaseModel):
    id: int
    at: datetime
    actor: str
    kind: str
    ref: str | None
    note: str | None


class NotificationPublic(BaseModel):
    id: int
    event: str
    channel: str
    target: str = Field(description="MQTT topic, or a webhook's scheme://host only")
    staff_id: str | None
    status: str
    attempts: int
    last_error: str | None
    created_at: datetime
    delivered_at: datetime | None


class WorkOrderDetail(WorkOrderPublic):
    transitions: list[TransitionPublic]
    evidence: list[EvidencePublic]


class WorkOrderCreate(BaseModel):
    site_id: str = Field(pattern=r"^[a-z0-9_-]{1,64}$")
    kind: NewKind
    title: str = Field(min_length=1, max_length=200)
    priority: Priority | None = Field(None, description="default: the dispatch policy's requests.<kind>")
    description: str | None = Field(None, max_length=10000)
    device_id: int | None = Field(None, ge=1, le=2**31 - 1)
    building_id: str | None = Field(None, pattern=TEXT_ID)
    grid_id: str | None = Field(None, pattern=TEXT_ID)
    location: str | None = Field(None, max_length=500)
    reporter: str | None = Field(None, max_length=200, description="the resident who raised it (resident kinds)")
    skill: str | None = Field(None, pattern=TEXT_ID)


class WorkOrderUpdate(BaseModel):
    """Descriptive fields only; state, assignee and priority change through the action routes."""

    title: str | None = Field(None, min_length=1, max_length=200, description="may not be null or blank")
    description: str | None = Field(None, max_length=10000)
    location: str | None = Field(None, max_length=500)
    reporter: str | None = Field(None, max_length=200)


class Note(BaseModel):
    note: str | None = Field(None, max_length=2000)


class AssignBody(BaseModel):
    staff_id: str = Field(pattern=STAFF_ID)
    note: str | None = Field(None, max_length=2000)


class ResolveBody(BaseModel):
    note: str | None = Field(None, max_length=2000)
    override_reason: str | None = Field(
        None, min_length=3, max_length=2000,
        description="alarm orders: resolve although the alarm has not cleared, and say why")


class EvidenceCreate(BaseModel):
    kind: str = Field(pattern=r"^(photo|attachment|note)$")
    ref: str | None = Field(None, min_length=1, max_length=1000, description="stored reference: object key or URL")
    note: str | None = Field(None, max_length=10000)


class RatingBody(BaseModel):
    rating: int = Field(ge=1, le=5)
    comment: str | None = Field(None, max_length=2000)


def public(order: WorkOrder) -> WorkOrderPublic:
    return WorkOrderPublic(**asdict(order))


def _transition(t: Transition) -> TransitionPublic:
    return TransitionPublic(**{k: getattr(t, k) for k in TransitionPublic.model_fields})


@router.get("/work-orders", response_model=Page[WorkOrderPublic])
async def list_work_orders(
    conn: Conn, user: Reader, site: SiteFilter = None,
    state: Annotated[list[State] | None, Query(max_length=9)] = None,
    kind: Annotated[list[Kind] | None, Query(max_length=5)] = None,
    priority: Annotated[list[Priority] | None, Query(max_length=4)] = None,
    assignee: Annotated[str | None, Query(pattern=STAFF_ID)] = None,
    mine: Annotated[bool, Query(description="only orders assigned to your staff member")] = False,
    open: Annotated[bool | None, Query(description="true: not closed or cancelled")] = None,
    limit: Limit = 100, cursor: Cursor = None,
) -> Page[WorkOrderPublic]:
    """Newest first. Visible: orders of your sites, and orders assigned to your staff member."""
    if mine and user.staff_id is None:
        raise ApiError(422, "invalid", "mine: your user is not linked to a staff member")
    scope = user.site_list()
    if site is not None and not user.sees(site):
        raise forbidden("site outside your scope")
    after = decode_cursor(cursor, (int,))
    rows = await (await conn.execute(
        """SELECT * FROM work_orders
            WHERE (%(scope)s::text[] IS NULL OR site_id = ANY(%(scope)s) OR assignee = %(me)s)
              AND (%(site)s::text IS NULL OR site_id = %(site)s)
              AND (%(states)s::text[] IS NULL OR state = ANY(%(states)s))
              AND (%(kinds)s::text[] IS NULL OR kind = ANY(%(kinds)s))
              AND (%(prios)s::text[] IS NULL OR priority = ANY(%(prios)s))
              AND (%(assignee)s::text IS NULL OR assignee = %(assignee)s)
              AND (NOT %(mine)s OR assignee = %(me)s)
              AND (%(open)s::boolean IS NULL OR (state NOT IN ('closed', 'cancelled')) = %(open)s)
              AND (%(after)s::bigint IS NULL OR id < %(after)s)
            ORDER BY id DESC LIMIT %(limit)s""",
        {"scope": scope, "me": user.staff_id, "site": site, "states": [s.value for s in state] if state else None,
         "kinds": [k.value for k in kind] if kind else None, "prios": [p.value for p in priority] if priority else None,
         "assignee": assignee, "mine": mine, "open": open, "after": after[0] if after else None, "limit": limit + 1},
    )).fetchall()
    items = [WorkOrderPublic(**{k: r[k] for k in WorkOrderPublic.model_fields}) for r in rows[:limit]]
    nxt = encode_cursor([rows[limit - 1]["id"]]) if len(rows) > limit else None
    return Page(items=items, next_cursor=nxt)


@router.get("/work-orders/{order_id}", response_model=WorkOrderDetail)
async def get_work_order(order_id: BigId, pool: SyncPool, user: Reader) -> WorkOrderDetail:
    order, transitions, evidence = await in_thread(pool, actions.detail, user, order_id)
    return WorkOrderDetail(**asdict(order), transitions=[_transition(t) for t in transitions],
                           evidence=[EvidencePublic(**e) for e in evidence])


@router.post("/work-orders", response_model=WorkOrderPublic, status_code=201)
async def create_work_order(body: WorkOrderCreate, pool: SyncPool, origin: Origin, response: Response,
                            user: Annotated[Principal, Depends(require("read"))]) -> WorkOrderPublic:
    """Resident requests (repair 报修, complaint 投诉, praise 表扬) by admin/operator/butler;
    manual maintenance orders by admin/operator. Assigned at once by the dispatch roster rule."""
    permission = "workorders.request" if body.kind.value in RESIDENT_KINDS else "workorders.create_manual"
    if not user.may(permission):
        raise forbidden(f"role {user.role.value} may not create {body.kind.value} orders ({permission})")
    if not user.sees(body.site_id):
        raise forbidden("site outside your scope")
    new = actions.NewOrder(**body.model_dump(exclude={"kind", "priority"}), kind=body.kind.value,
                           priority=body.priority.value if body.priority else None)
    order = await in_thread(pool, actions.create, user, new, ip=origin)
    response.headers["Location"] = f"/work-orders/{order.id}"
    return public(order)


@router.patch("/work-orders/{order_id}", response_model=WorkOrderPublic)
async def update_work_order(order_id: BigId, body: WorkOrderUpdate, pool: SyncPool, origin: Origin,
                            user: Annotated[Principal, Depends(require("workorders.edit"))]) -> WorkOrderPublic:
    """Correct title, description, location or reporter (admin, operator); null clears all but the title."""
    changes = body.model_dump(exclude_unset=True)
    if "title" in changes and (changes["title"] is None or not changes["title"].strip()):
        raise ApiError(422, "invalid", "title: may not be null or blank")
    cleaned = {k: (v.strip() or None) if isinstance(v, str) else v for k, v in changes.items()}
    return public(await in_thread(pool, actions.update, user, order_id, cleaned, ip=origin))


async def _step(pool: SyncPool, user: Principal, order_id: int, to_state: str, origin: str, **kw: Any) -> WorkOrderPublic:
    return public(await in_thread(pool, actions.step, user, order_id, to_state, ip=origin, **kw))


Assigner = Annotated[Principal, Depends(require("workorders.assign"))]
Worker = Annotated[Principal, Depends(require("workorders.work"))]


@router.post("/work-orders/{order_id}/assign", response_model=WorkOrderPublic)
async def assign(order_id: BigId, body: AssignBody, pool: SyncPool, origin: Origin, user: Assigner) -> WorkOrderPublic:
    """(Re)assign to a staff member of the order's site (admin, operator)."""
    return await _step(pool, user, order_id, "assigned", origin, note=body.note, assignee=body.staff_id)


@router.post("/work-orders/{order_id}/accept", response_model=WorkOrderPublic)
async def accept(order_id: BigId, body: Note, pool: SyncPool, origin: Origin, user: Worker) -> WorkOrderPublic:
    """The assignee accepts; repeating it returns the order unchanged."""
    return await _step(pool, user, order_id, "accepted", origin, note=body.note)


@router.post("/work-orders/{order_id}/arrive", response_model=WorkOrderPublic)
async def arrive(order_id: BigId, body: Note, pool: SyncPool, origin: Origin, user: Worker) -> WorkOrderPublic:
    """The assignee is on site; repeating it returns the order unchanged."""
    return await _step(pool, user, order_id, "on_site", origin, note=body.note)


@router.post("/work-orders/{order_id}/resolve", response_model=WorkOrderPublic,
             responses={409: {"description": "closure_refused: the order's alarm has not cleared (no override_reason)"}})
async def resolve(order_id: BigId, body: ResolveBody, pool: SyncPool, origin: Origin, user: Worker) -> WorkOrderPublic:
    """The assignee resolves. An alarm order only once its alarm cleared, or with override_reason."""
    return await _step(pool, user, order_id, "resolved", origin, note=body.note, override_reason=body.override_reason)


@router.post("/work-orders/{order_id}/verify", response_model=WorkOrderPublic)
async def verify(order_id: BigId, body: Note, pool: SyncPool, origin: Origin, user: Worker) -> WorkOrderPublic:
    """Admin, operator, or a supervisor of the site confirms the work."""
    return await _step(pool, user, order_id, "verified", origin, note=body.note)


@router.post("/work-orders/{order_id}/close", response_model=WorkOrderPublic)
async def close(order_id: BigId, body: Note, pool: SyncPool, origin: Origin, user: Worker) -> WorkOrderPublic:
    return await _step(pool, user, order_id, "closed", origin, note=body.note)


@router.post("/work-orders/{order_id}/cancel", response_model=WorkOrderPublic)
async def cancel(order_id: BigId, body: Note, pool: SyncPool, origin: Origin, user: Worker) -> WorkOrderPublic:
    return await _step(pool, user, order_id, "cancelled", origin, note=body.note)


@router.post("/work-orders/{order_id}/reopen", response_model=WorkOrderPublic)
async def reopen(order_id: BigId, body: Note, pool: SyncPool, origin: Origin, user: Worker) -> WorkOrderPublic:
    return await _step(pool, user, order_id, "reopened", origin, note=body.note)


@router.post("/work-orders/{order_id}/evidence", response_model=EvidencePublic, status_code=201)
async def add_evidence(order_id: BigId, body: EvidenceCreate, pool: SyncPool, origin: Origin,
                       user: Annotated[Principal, Depends(require("workorders.evidence"))]) -> EvidencePublic:
    """A photo or attachment by stored reference (object key or URL; the bytes live elsewhere), or a note."""
    row = await in_thread(pool, actions.add_evidence, user, order_id, kind=body.kind, ref=body.ref, note=body.note,
                          ip=origin)
    return EvidencePublic(**row)


@router.post("/work-orders/{order_id}/rating", response_model=WorkOrderPublic)
async def rate(order_id: BigId, body: RatingBody, pool: SyncPool, origin: Origin,
               user: Annotated[Principal, Depends(require("workorders.rate"))]) -> WorkOrderPublic:
    """The resident's rating (1–5) and comment, relayed by butler or desk; resident orders, once resolved."""
    return public(await in_thread(pool, actions.rate, user, order_id, rating=body.rating, comment=body.comment,
                                  ip=origin))


@router.get("/work-orders/{order_id}/notifications", response_model=list[NotificationPublic])
async def notifications(order_id: BigId, pool: SyncPool,
                        user: Annotated[Principal, Depends(require("workorders.notifications"))]) -> list[NotificationPublic]:
    """The order's notifications (outbox) and whether each was delivered (admin, operator)."""
    return [NotificationPublic(**n) for n in await in_thread(pool, actions.notifications, user, order_id)]
