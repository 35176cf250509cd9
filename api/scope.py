"""Who may do what, and where: roles map to permissions; users see only their sites.

Rule (docs/api.md): a role without the permission gets 403 whatever the object; an object on
a site outside the caller's scope answers 404, exactly like one that does not exist; a filter
naming a site outside the scope answers 403 whether or not that site exists.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Role(StrEnum):
    admin = "admin"
    operator = "operator"
    technician = "technician"
    butler = "butler"


ALL_ROLES = frozenset(Role)
STAFF_ROLES = frozenset({Role.admin, Role.operator})

PERMISSIONS: dict[str, frozenset[Role]] = {
    "read": ALL_ROLES,
    "dead_letters.read": frozenset({Role.admin}),
    "audit.read": frozenset({Role.admin}),
    "users.manage": frozenset({Role.admin}),
    "alarms.acknowledge": ALL_ROLES,
    "alarms.comment": ALL_ROLES,
    "alarms.shelve": STAFF_ROLES,
    "alarms.clear": frozenset({Role.admin, Role.operator, Role.technician}),
    "commands.send": ALL_ROLES,  # narrowed per command by api.commands.policy
    "passes.manage": frozenset({Role.admin, Role.operator, Role.butler}),
    "passes.check": ALL_ROLES,
    # work orders (api/routes/workorders.py; the assignee/supervisor rules are in api/workorder_actions.py)
    "workorders.request": frozenset({Role.admin, Role.operator, Role.butler}),
    "workorders.create_manual": STAFF_ROLES,
    "workorders.assign": STAFF_ROLES,
    "workorders.edit": STAFF_ROLES,
    "workorders.work": ALL_ROLES,  # accept / arrive / resolve: only as the order's assignee
    "workorders.evidence": ALL_ROLES,
    "workorders.rate": frozenset({Role.admin, Role.operator, Role.butler}),
    "attendance.manage": STAFF_ROLES,  # anyone's check-in/out in scope; everyone may do their own
    "leave.manage": STAFF_ROLES,
    "workorders.notifications": STAFF_ROLES,
}


@dataclass(frozen=True)
class Principal:
    """The authenticated caller; `sites` None means every site."""

    user_id: int
    username: str
    role: Role
    sites: frozenset[str] | None
    via: str  # "jwt" or "api_token"
    staff_id: str | None = None  # the staff member this user acts as (work orders, attendance)

    def may(self, permission: str) -> bool:
        return self.role in PERMISSIONS[permission]

    def sees(self, site_id: str) -> bool:
        return self.sites is None or site_id in self.sites

    def site_list(self) -> list[str] | None:
        """For SQL: `site_id = ANY(%s)` unless None (all sites)."""
        return None if self.sites is None else sorted(self.sites)


def parse_sites(values: list[str]) -> frozenset[str] | None:
    return None if "*" in values else frozenset(values)
