"""An access-control gate or door: credentials, visitor passes, held-open, forced, tamper.

People arrive at random (fewer at night); most are granted by card, QR, face or PIN, some are
denied. Visitor passes issued by command are honoured inside their window, gate set and use
count. A door left open past `held_open_s` raises `held_open`; one opened without a grant
raises `forced_open`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from simulators.devices.base import Reply, SimDevice, Value

HELD_OPEN_S = 30.0
METHODS = ("card", "card", "card", "qr", "face", "face", "pin")
DENY_REASONS = ("unknown_card", "expired", "blacklisted", "interlock_active")


@dataclass(frozen=True)
class VisitorPass:
    code: str
    valid_from: float   # simulated seconds since start
    valid_to: float
    uses: int
    gates: frozenset[str] = frozenset()
    pass_id: int | None = None          # the hub's id of the pass, reported with each use
    from_ms: int | None = None          # absolute window (epoch ms, device clock) when the hub
    until_ms: int | None = None         # sent `valid_from`/`valid_until`; wins over the relative one

    def in_window(self, now_s: float, clock_ms: int) -> bool:
        if self.from_ms is not None and self.until_ms is not None:
            return self.from_ms <= clock_ms < self.until_ms
        return self.valid_from <= now_s <= self.valid_to


@dataclass
class Gate(SimDevice):
    now: float = 0.0
    door_open: bool = False
    open_left: float = 0.0
    open_s: float = 0.0
    authorised: bool = False
    held_reported: bool = False
    locked: bool = True
    tamper: bool = False
    mode: int = 0                       # 0 normal, 1 held_open, 2 locked_down
    passes: dict[str, VisitorPass] = field(default_factory=dict)
    revoked: set[str] = field(default_factory=set)
    visitor_codes: list[str] = field(default_factory=list)

    def step(self, dt: float) -> None:
        if not self.powered:
            return
        self.now += dt
        if self.door_open:
            self.open_s += dt
            self.open_left -= dt
            if self.mode != 1 and self.open_s >= HELD_OPEN_S and not self.held_reported:
                self.held_reported = True
                self.emit("held_open", seconds=round(self.open_s))
            if self.open_left <= 0 and self.mode != 1:
                self._close()
        elif self.mode == 0:
            rate = 20.0 if self.is_night else 240.0        # arrivals per hour
            if self.chance(rate, dt):
                self._arrival()
        if not self.tamper and self.chance(0.01, dt):    # a cover opened now and then
            self.tamper = True
            self.emit("tamper")
        elif self.tamper and self.chance(30.0, dt):
            self.tamper = False
            self.emit("tamper_restored")

    def _arrival(self) -> None:
        if self.visitor_codes and self.rng.random() < 0.3:
            self.present_pass(self.rng.choice(self.visitor_codes))
            return
        method = self.rng.choice(METHODS)
        credential = f"{self.rng.randrange(16**8):08x}"
        if self.rng.random() < 0.92:
            self._grant(method, credential=credential)
            if self.rng.random() < 0.02:     # someone props the door
                self.open_left = HELD_OPEN_S + self.rng.uniform(5, 30)
        else:
            self.emit("denied", method=method, credential=credential, reason=self.rng.choice(DENY_REASONS))

    def present_pass(self, code: str) -> bool:
        """A visitor shows a QR pass at this gate; returns whether the door opened."""
        vp = self.passes.get(code)
        reason = None
        if vp is None:
            reason = "unknown_pass"
        elif code in self.revoked:
            reason = "revoked"
        elif not vp.in_window(self.now, self.clock_ms):
            reason = "expired"
        elif vp.uses <= 0:
            reason = "pass_used_up"
        elif vp.gates and self.spec.device not in vp.gates:
            reason = "wrong_gate"
        elif self.mode == 2:
            reason = "locked_down"
        # A pass the hub issued is reported by its id: the code is a bearer secret, kept out of events.
        who: dict[str, Any] = {"pass_id": vp.pass_id} if vp is not None and vp.pass_id is not None else {"credential": code}
        if reason is not None:
            self.emit("denied", method="visitor_pass", reason=reason, **who)
            return False
        assert vp is not None
        self.passes[code] = dataclasses.replace(vp, uses=vp.uses - 1)
        self._grant("visitor_pass", uses_left=vp.uses - 1, **who)
        return True

    def _grant(self, method: str, **data: Any) -> None:
        self.emit("granted", method=method, **data)
        self.authorised = True
        self.locked = False
        self.door_open = True
        self.open_s = 0.0
        self.held_reported = False
        self.open_left = self.rng.uniform(3.0, 8.0)

    def _close(self) -> None:
        self.door_open = False
        self.authorised = False
        self.locked = self.mode != 1
        self.open_s = 0.0

    def values(self) -> dict[str, Value]:
        return {"door_open": self.door_open, "locked": self.locked, "tamper": self.tamper, "mode": self.mode}

    def command(self, command_id: str, name: str, args: dict[str, Any]) -> Reply:
        if name not in self.spec.commands:
            return Reply(command_id, "rejected", f"unknown command {name!r}")
        if name == "open_once":
            if self.mode == 2:
                return Reply(command_id, "rejected", "gate is locked down")
            self._grant("remote", operator=str(args.get("operator", "")))
            return Reply(command_id, "done", "opened once")
        if name == "hold_open":
            self.mode, self.locked, self.door_open, self.open_s = 1, False, True, 0.0
            return Reply(command_id, "done", "held open")
        if name == "lock":
            self.mode = 2
            self._close()
            return Reply(command_id, "done", "locked down")
        if name == "back_to_normal":
            self.mode = 0
            self._close()
            return Reply(command_id, "done", "normal")
        if name == "add_visitor_pass":
            return self._add_pass(command_id, args)
        if name == "revoke_visitor_pass":
            code = str(args.get("code", ""))
            if code not in self.passes:
                return Reply(command_id, "rejected", "no such pass at this gate")
            self.revoked.add(code)
            return Reply(command_id, "done", "revoked")
        return Reply(command_id, "rejected", f"unsupported command {name!r}")

    def _add_pass(self, command_id: str, args: dict[str, Any]) -> Reply:
        try:
            code = str(args["code"])
            valid_s = float(args.get("valid_s", 4 * 3600))
            uses = int(args.get("uses", 2))
            pass_id = _optional_int(args.get("pass_id"))
            from_ms, until_ms = _epoch_ms(args.get("valid_from")), _epoch_ms(args.get("valid_until"))
        except (KeyError, TypeError, ValueError) as exc:
            return Reply(command_id, "rejected", f"bad visitor pass arguments: {exc}")
        if (from_ms is None) != (until_ms is None) or (from_ms is not None and until_ms is not None and until_ms <= from_ms):
            return Reply(command_id, "rejected", "bad visitor pass arguments: need valid_from < valid_until")
        gates = frozenset(str(g) for g in args.get("gates", []))
        known = self.passes.get(code)
        if known is not None and pass_id is not None and known.pass_id == pass_id:
            uses = min(uses, known.uses)   # a resent push never gives back uses spent here
        self.passes[code] = VisitorPass(code, self.now, self.now + valid_s, uses, gates, pass_id, from_ms, until_ms)
        self.revoked.discard(code)
        if args.get("visitor_arrives", True):
            self.visitor_codes.append(code)
        if until_ms is not None:
            return Reply(command_id, "done", f"pass {pass_id or code} stored for {uses} uses")
        return Reply(command_id, "done", f"pass {code} valid {valid_s:.0f} s for {uses} uses")

    def trigger(self, action: str, **kw: Any) -> None:
        if action == "forced_open":
            self.clock_hour, self.clock_fixed = float(kw.get("hour", 2.5)), True
            self.door_open, self.locked, self.authorised = True, False, False
            self.open_s, self.held_reported = 0.0, False
            self.open_left = float(kw.get("open_s", 40.0))
            self.emit("forced_open", night=self.is_night, local_hour=self.clock_hour)
            if kw.get("tamper", False):
                self.tamper = True
                self.emit("tamper")
        elif action == "tamper":
            self.tamper = True
            self.emit("tamper")
        elif action == "power_loss":
            self.powered = False
        elif action == "power_restored":
            self.powered = True
        elif action == "visitor":
            self.present_pass(str(kw["code"]))
        else:
            super().trigger(action, **kw)


def _optional_int(raw: object) -> int | None:
    if raw is None:
        return None
    if isinstance(raw, bool) or not isinstance(raw, int):
        raise ValueError(f"pass_id must be an integer, not {raw!r}")
    return raw


def _epoch_ms(raw: object) -> int | None:
    """RFC 3339 text with a zone (or epoch milliseconds) → epoch ms; None when absent."""
    if raw is None:
        return None
    if isinstance(raw, int | float) and not isinstance(raw, bool):
        return int(raw)
    if isinstance(raw, str):
        at = datetime.fromisoformat(raw)
        if at.tzinfo is None:
            raise ValueError(f"{raw!r} has no time zone")
        return int(at.timestamp() * 1000)
    raise ValueError(f"expected a time, not {raw!r}")
