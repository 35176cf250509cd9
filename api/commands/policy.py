"""The per-kind allow-list of commands and arguments, and who may send them. Pure functions.

Anything not listed here is refused, whatever a device model claims to support.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from api.errors import ApiError
from api.scope import Role

ADM, OPS, TEC, BUT = Role.admin, Role.operator, Role.technician, Role.butler
MAX_DISABLE = timedelta(hours=24)


@dataclass(frozen=True)
class Arg:
    type: type  # str, int, datetime
    required: bool = True
    min: int | None = None
    max: int | None = None


@dataclass(frozen=True)
class CommandSpec:
    roles: frozenset[Role]
    dangerous: bool
    args: dict[str, Arg] = field(default_factory=dict)


REASON = Arg(str, min=3, max=500)
POLICY: dict[str, dict[str, CommandSpec]] = {
    "elevator": {
        "return_to_main_floor": CommandSpec(frozenset({ADM, OPS, TEC}), dangerous=True),
        "out_of_service": CommandSpec(frozenset({ADM, OPS, TEC}), dangerous=True, args={"reason": REASON}),
        "back_to_service": CommandSpec(frozenset({ADM, OPS, TEC}), dangerous=False),
    },
    "gate": {
        "open_once": CommandSpec(frozenset({ADM, OPS, TEC, BUT}), dangerous=False),
        "hold_open": CommandSpec(frozenset({ADM, OPS, BUT}), dangerous=True, args={"duration_s": Arg(int, min=1, max=3600), "reason": REASON}),
        "lock": CommandSpec(frozenset({ADM, OPS}), dangerous=True, args={"reason": REASON}),
        "back_to_normal": CommandSpec(frozenset({ADM, OPS, TEC, BUT}), dangerous=False),
    },
    "fire_panel": {
        "silence": CommandSpec(frozenset({ADM, OPS, TEC}), dangerous=True),
        "reset": CommandSpec(frozenset({ADM, OPS, TEC}), dangerous=True),
        # Shielding a detector is a hidden risk: only with a reason and an expiry (≤ 24 h).
        "disable_detector": CommandSpec(frozenset({ADM, OPS}), dangerous=True, args={
            "detector": Arg(str, min=1, max=64), "reason": Arg(str, min=5, max=500), "until": Arg(datetime)}),
        "enable_detector": CommandSpec(frozenset({ADM, OPS, TEC}), dangerous=False, args={"detector": Arg(str, min=1, max=64)}),
    },
}


def _check_arg(name: str, spec: Arg, value: Any, now: datetime) -> Any:
    if spec.type is str:
        if not isinstance(value, str) or not (spec.min or 0) <= len(value.strip()) <= (spec.max or 10_000):
            raise ApiError(422, "invalid", f"args.{name}: expected text of {spec.min}–{spec.max} characters")
        return value.strip()
    if spec.type is int:
        if not isinstance(value, int) or isinstance(value, bool) or not (spec.min or 0) <= value <= (spec.max or 2**31):
            raise ApiError(422, "invalid", f"args.{name}: expected an integer in {spec.min}–{spec.max}")
        return value
    try:
        when = datetime.fromisoformat(value) if isinstance(value, str) else None
    except ValueError:
        when = None
    if when is None or when.tzinfo is None:
        raise ApiError(422, "invalid", f"args.{name}: expected an RFC 3339 time with a zone")
    if not now < when <= now + MAX_DISABLE:
        raise ApiError(422, "invalid", f"args.{name}: must be in the future and at most 24 h ahead")
    return when.astimezone(UTC).isoformat()


def check_command(kind: str, name: str, args: dict[str, Any], role: Role, *, now: datetime | None = None) -> tuple[CommandSpec, dict[str, Any]]:
    """The command's spec and normalised arguments; 422 if not allowed or malformed, 403 by role."""
    spec = POLICY.get(kind, {}).get(name)
    if spec is None:
        allowed = sorted(POLICY.get(kind, {}))
        raise ApiError(422, "command_not_allowed", f"command {name!r} is not allowed for {kind} devices", {"allowed": allowed})
    if role not in spec.roles:
        raise ApiError(403, "forbidden", f"role {role.value} may not send {name}")
    unknown = sorted(set(args) - set(spec.args))
    if unknown:
        raise ApiError(422, "invalid", f"args: unexpected argument(s) {', '.join(unknown)}")
    now = now or datetime.now(UTC)
    clean: dict[str, Any] = {}
    for arg_name, arg in spec.args.items():
        if arg_name not in args:
            if arg.required:
                raise ApiError(422, "invalid", f"args.{arg_name}: required for {name}")
            continue
        clean[arg_name] = _check_arg(arg_name, arg, args[arg_name], now)
    return spec, clean


TERMINAL = frozenset({"done", "rejected", "failed", "expired", "timed_out"})


def reply_transition(state: str, status: str) -> str | None:
    """The state a device reply moves a command to, or None if it is late or a duplicate."""
    if status == "accepted":
        return "accepted" if state in ("queued", "sent") else None
    if status in ("done", "rejected", "failed") and state in ("queued", "sent", "accepted"):
        return status
    return None
