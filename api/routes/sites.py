"""Sites, buildings and grids the caller may see."""

from __future__ import annotations

from datetime import datetime

from fastapi import APIRouter
from pydantic import BaseModel

from api.deps import Conn, Reader
from api.errors import not_found
from api.params import SiteId

router = APIRouter(tags=["sites"])


class SitePublic(BaseModel):
    id: str
    name: str | None
    timezone: str
    address: str | None
    updated_at: datetime


class BuildingPublic(BaseModel):
    id: str
    name: str | None
    floors: int
    basement_floors: int


class GridPublic(BaseModel):
    id: str
    name: str | None
    buildings: list[str]


@router.get("/sites", response_model=list[SitePublic])
async def list_sites(conn: Conn, user: Reader) -> list[SitePublic]:
    rows = await (await conn.execute(
        "SELECT id, name, timezone, address, updated_at FROM sites WHERE %(all)s OR id = ANY(%(sites)s) ORDER BY id",
        {"all": user.sites is None, "sites": user.site_list() or []},
    )).fetchall()
    return [SitePublic(**r) for r in rows]


async def _visible_site(conn: Conn, user: Reader, site_id: str) -> None:
    if not user.sees(site_id):
        raise not_found("site")
    if await (await conn.execute("SELECT 1 FROM sites WHERE id = %s", (site_id,))).fetchone() is None:
        raise not_found("site")


@router.get("/sites/{site_id}", response_model=SitePublic)
async def get_site(site_id: SiteId, conn: Conn, user: Reader) -> SitePublic:
    await _visible_site(conn, user, site_id)
    row = await (await conn.execute("SELECT id, name, timezone, address, updated_at FROM sites WHERE id = %s", (site_id,))).fetchone()
    assert row is not None
    return SitePublic(**row)


@router.get("/sites/{site_id}/buildings", response_model=list[BuildingPublic])
async def list_buildings(site_id: SiteId, conn: Conn, user: Reader) -> list[BuildingPublic]:
    await _visible_site(conn, user, site_id)
    rows = await (await conn.execute(
        "SELECT id, name, floors, basement_floors FROM buildings WHERE site_id = %s ORDER BY id", (site_id,)
    )).fetchall()
    return [BuildingPublic(**r) for r in rows]


@router.get("/sites/{site_id}/grids", response_model=list[GridPublic])
async def list_grids(site_id: SiteId, conn: Conn, user: Reader) -> list[GridPublic]:
    await _visible_site(conn, user, site_id)
    rows = await (await conn.execute("SELECT id, name, buildings FROM grids WHERE site_id = %s ORDER BY id", (site_id,))).fetchall()
    return [GridPublic(**r) for r in rows]
