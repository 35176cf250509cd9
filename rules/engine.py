"""The rule engine: readings and events in, alarm actions out. Pure (no I/O), so the live hub,
the warm start after a restart and `hub rules backtest` all run the very same code.

Time is data time (epoch seconds). Each batch is sorted by (device, ts); conditions are computed
with numpy over every row of a rule at once (sample-and-hold of each metric per device, with
hysteresis by forward-filling the last decisive sample), then only the points where a device's
condition *changes* are walked in Python. Durations are exact: an alarm for "20 s" is raised at
since + 20 s whether the deciding sample or a timer tick (`advance`) notices it.

Data older than what the engine already evaluated for a device ("late") is stored by ingest
but not re-evaluated live (`late_rows` counts it); backtests see history in order.
"""

from __future__ import annotations

import itertools
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np
import numpy.typing as npt

from rules.devices import DeviceMeta
from rules.model import Condition, Rule, RuleSet
from rules.schedule import in_schedule, window_end, window_start

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]
B = npt.NDArray[np.bool_]
Obj = npt.NDArray[np.object_]

CONDITION_KINDS = frozenset({"threshold", "state", "rate", "composite", "offline"})
ONLINE = "online"
ANY = "_any"  # any other metric: only "data arrived" matters (missing-data rules)


# -- actions -----------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Raise:
    rule_id: str
    scope_key: str
    site: str
    device_id: int | None
    at: float
    kind: str
    severity: str
    title: str
    detail: dict[str, Any]
    parent: tuple[str, str] | None = None  # (rule_id, scope_key) of a root-cause parent


@dataclass(frozen=True, slots=True)
class Clear:
    rule_id: str
    scope_key: str
    at: float
    reason: str


@dataclass(frozen=True, slots=True)
class Annotate:
    rule_id: str
    scope_key: str
    detail: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Link:
    rule_id: str
    scope_key: str
    parent: tuple[str, str]


Action = Raise | Clear | Annotate | Link


@dataclass(slots=True)
class Rows:
    """Readings as parallel arrays (quality-bad rows are left out: unknown, not a value)."""

    ts: F64
    dev: I64
    metric: I64
    value: F64
    text: Obj

    def __len__(self) -> int:
        return len(self.ts)

    def take(self, idx: npt.NDArray[Any]) -> Rows:
        return Rows(self.ts[idx], self.dev[idx], self.metric[idx], self.value[idx], self.text[idx])

    @staticmethod
    def empty() -> Rows:
        return Rows(np.empty(0), np.empty(0, np.int64), np.empty(0, np.int64), np.empty(0), np.empty(0, object))

    @staticmethod
    def concat(parts: Sequence[Rows]) -> Rows:
        parts = [p for p in parts if len(p)]
        if not parts:
            return Rows.empty()
        if len(parts) == 1:
            return parts[0]
        return Rows(np.concatenate([p.ts for p in parts]), np.concatenate([p.dev for p in parts]),
                    np.concatenate([p.metric for p in parts]), np.concatenate([p.value for p in parts]),
                    np.concatenate([p.text for p in parts]))


EventIn = tuple[float, int, str, Any]  # ts, device id, code, data


# -- per-scope state -----------------------------------------------------------------------------
@dataclass(slots=True)
class CondTracker:
    cond: bool = False
    since: float | None = None
    active: bool = False
    grouped: bool = False  # active, but represented by a root-cause parent (no row of its own)
    clear_since: float | None = None
    raised_at: float | None = None
    flapping: bool = False
    raises: deque[float] = field(default_factory=deque)


@dataclass(slots=True)
class GroupTracker:
    """Correlation across devices, or the root-cause parent of an offline rule."""

    members: dict[int, float] = field(default_factory=dict)  # device → since
    children: set[int] = field(default_factory=set)
    active: bool = False
    clear_since: float | None = None
    site: str = ""


@dataclass(slots=True)
class EventTracker:
    times: deque[float] = field(default_factory=deque)
    active: dict[str, float | None] = field(default_factory=dict)  # scope → clear deadline


def _fmt(template: str, values: dict[str, Any]) -> str:
    class Safe(dict[str, Any]):
        def __missing__(self, key: str) -> str:
            return "{" + key + "}"

    try:
        return template.format_map(Safe(values))
    except (ValueError, IndexError):
        return template


def iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).isoformat()


class Engine:
    """Holds every rule's state; `feed` a batch, `advance` the clock; both return actions."""

    def __init__(self, ruleset: RuleSet, devices: dict[int, DeviceMeta]) -> None:
        self.ruleset = ruleset
        self.devices = devices
        self.size = (max(devices) + 1) if devices else 1
        n = self.size
        names: dict[str, int] = {ONLINE: 0}
        for rule in ruleset.rules:
            for c in [*rule.conditions, *(rule.clear_when or [])]:
                names.setdefault(c.metric, len(names))
            if rule.metric:
                names.setdefault(rule.metric, len(names))
            elif rule.kind == "missing":
                names.setdefault(ANY, len(names))
        for m in ruleset.maintenance:
            names.setdefault(m.condition.metric, len(names))
        self.metric_ix = names
        self.metric_names = list(names)
        nm = len(names)
        self.carry_v = np.full((nm, n), np.nan)
        self.carry_t = np.full((nm, n), np.nan)
        self.carry_rate = np.full((nm, n), np.nan)
        self.carry_s = np.full((nm, n), None, dtype=object)
        self.clock = np.full(n, -np.inf)
        self.last_seen = np.full(n, np.nan)
        self.maint = np.zeros(n, bool)
        self.external_maint: set[int] = set()
        self.late_rows = 0
        self.evaluations = 0
        self.rules = list(ruleset.rules)
        self.by_id = {r.id: r for r in self.rules}
        self.scope_mask: dict[str, B] = {}
        for rule in self.rules:
            mask = np.zeros(n, bool)
            for d, meta in devices.items():
                mask[d] = meta.matches(rule.scope)
            self.scope_mask[rule.id] = mask
        self.maint_masks = []
        for mw in ruleset.maintenance:
            mask = np.zeros(n, bool)
            for d, meta in devices.items():
                mask[d] = meta.matches(mw.scope)
            self.maint_masks.append(mask)
        # per rule state
        self.cond_state: dict[str, B] = {r.id: np.zeros(n, bool) for r in self.rules}
        self.sig_state: dict[str, Any] = {r.id: np.zeros(n, np.int8) for r in self.rules if r.clear_when}
        self.hyst: dict[tuple[str, int], B] = {}
        self.ctrk: dict[tuple[str, int], CondTracker] = {}
        self.gtrk: dict[tuple[str, str], GroupTracker] = {}
        self.etrk: dict[tuple[str, int], EventTracker] = {}
        self.seen: dict[str, F64] = {r.id: np.full(n, np.nan) for r in self.rules if r.kind == "missing"}
        self.missing_active: dict[str, B] = {r.id: np.zeros(n, bool) for r in self.rules if r.kind == "missing"}
        self.maint_hyst: list[B] = [np.zeros(n, bool) for _ in ruleset.maintenance]
        self._resets_on_offline = [r for r in self.rules if r.kind in CONDITION_KINDS | {"correlation"}
                                   and all(c.metric != ONLINE for c in r.conditions)]

    # -- input conversion ----------------------------------------------------------------------
    def rows_from_readings(self, readings: Sequence[tuple[Any, ...]]) -> Rows:
        """Contract rows (ts, device, metric, value, text, quality) → arrays of the metrics used.

        Rows of metrics no rule reads become one `*` row per message (enough for missing-data
        rules); bad-quality rows are left out. Done column-wise (zip, map, numpy): this runs in
        the ingest process for every committed row, beside the MQTT and COPY threads.
        """
        n = len(readings)
        if not n:
            return Rows.empty()
        ix = self.metric_ix
        any_ix = ix.get(ANY)
        dts, devs, names, values, texts, quality = zip(*readings, strict=True)
        met = np.fromiter(map(ix.get, names, itertools.repeat(-1)), np.int64, n)
        good = np.fromiter(quality, np.int64, n) < 2
        used = good & (met >= 0)
        dev = np.fromiter(devs, np.int64, n)
        ts = np.fromiter(map(datetime.timestamp, dts), float, n)
        keep = np.flatnonzero(used)
        if any_ix is not None:
            spare = np.flatnonzero(good & (met < 0))
            if len(spare):
                first = np.ones(len(spare), bool)  # first unused row of each (time, device)
                first[1:] = (dev[spare][1:] != dev[spare][:-1]) | (ts[spare][1:] != ts[spare][:-1])
                spare = spare[first]
                met[spare] = any_ix
                keep = np.sort(np.concatenate([keep, spare]))
        if not len(keep):
            return Rows.empty()
        value = np.array(values, dtype=float)[keep]   # None → NaN
        text = np.array(texts, dtype=object)[keep]
        spare_rows = met[keep] == any_ix if any_ix is not None else np.zeros(len(keep), bool)
        value[spare_rows] = np.nan
        text[spare_rows] = None
        return Rows(ts[keep], dev[keep], met[keep], value, text)

    def suppressed(self, device: int | None) -> bool:
        return device is not None and (bool(self.maint[device]) or device in self.external_maint)

    def meta_values(self, meta: DeviceMeta, **extra: Any) -> dict[str, Any]:
        return {"site": meta.site, "device": meta.device, "name": meta.name or meta.device,
                "building": meta.building, "zone": meta.zone, "grid": meta.grid, "floor": meta.floor,
                "kind": meta.kind, **extra}

    # -- main entry points ----------------------------------------------------------------------
    def feed(self, rows: Rows, events: Sequence[EventIn] = ()) -> list[Action]:
        out: list[Action] = []
        n = self.size
        ok_dev = (rows.dev >= 0) & (rows.dev < n)
        if not ok_dev.all():
            rows = rows.take(np.flatnonzero(ok_dev))
        # Status transitions arrive as events; they become rows of the pseudo-metric `online`.
        status = [(t, d, c) for t, d, c, _ in events if c in ("online", "offline") and 0 <= d < n]
        if status:
            st = np.array([s[0] for s in status], float)
            sd = np.array([s[1] for s in status], np.int64)
            sv = np.array([1.0 if s[2] == "online" else 0.0 for s in status])
            rows = Rows.concat([rows, Rows(st, sd, np.zeros(len(status), np.int64), sv, np.full(len(status), None, object))])
            for t, d, c in sorted(status):
                if c == "offline":
                    self._offline_reset(d, t, out)
        if len(rows):
            order = np.lexsort((rows.ts, rows.dev))
            rows = rows.take(order)
            # Status changes carry the hub's receive time, not the device's clock: they neither
            # count as late nor move the device's clock (its data in flight would look late).
            data = rows.metric != self.metric_ix[ONLINE]
            fresh = (rows.ts >= self.clock[rows.dev]) | ~data
            if not fresh.all():
                self.late_rows += int((~fresh).sum())
                rows = rows.take(np.flatnonzero(fresh))
                data = data[fresh]
            if data.any():
                dd, dt = rows.dev[data], rows.ts[data]
                ends = np.r_[dd[1:] != dd[:-1], True]
                self.clock[dd[ends]] = dt[ends]
        if len(rows):
            np.fmax.at(self.last_seen, rows.dev, rows.ts)
            self._maintenance(rows)
            for rule in self.rules:
                if rule.kind in CONDITION_KINDS:
                    self._condition_rule(rule, rows, out)
                elif rule.kind == "correlation":
                    self._correlation_rule(rule, rows, out)
                elif rule.kind == "missing":
                    self._missing_rows(rule, rows, out)
            self._update_carry(rows)
            out = [self._with_values(a) if isinstance(a, Raise) else a for a in out]
        if events:
            evs = sorted((e for e in events if 0 <= e[1] < n), key=lambda e: e[0])
            for t, d, _c, _data in evs:
                if not self.last_seen[d] >= t:
                    self.last_seen[d] = t
            for rule in self.rules:
                if rule.kind in ("count", "event", "watchlist"):
                    self._event_rule(rule, evs, out)
                elif rule.kind == "missing" and rule.metric is None:
                    self._missing_events(rule, evs, out)
        return out

    def advance(self, now: float) -> list[Action]:
        """Timers: durations that ran out, recoveries that held, silence that lasted."""
        out: list[Action] = []
        for (rid, d), trk in list(self.ctrk.items()):
            rule = self.by_id[rid]
            self._cond_due(rule, self.devices[d], trk, now, out)
            self._maybe_forget(rid, d, trk, now)
        for (rid, key), g in list(self.gtrk.items()):
            self._group_due(self.by_id[rid], key, g, now, out)
        for (rid, d), e in list(self.etrk.items()):
            self._event_due(self.by_id[rid], self.devices[d], e, now, out)
        for rid, seen in self.seen.items():
            self._missing_due(self.by_id[rid], seen, now, out)
        return out

    def adopt(self, rule_id: str, scope_key: str) -> bool:
        """Mark an alarm the database holds open as active here (warm start); False if unknown."""
        rule = self.by_id.get(rule_id)
        if rule is None:
            return False
        if rule.kind in CONDITION_KINDS:
            for d, meta in self.devices.items():
                if meta.scope_key == scope_key:
                    trk = self.ctrk.setdefault((rule_id, d), CondTracker())
                    if not trk.active:
                        trk.active, trk.raised_at = True, None
                        if not trk.cond:
                            trk.clear_since = float(self.clock[d]) if np.isfinite(self.clock[d]) else None
                    return True
        if rule.kind == "missing":
            for d, meta in self.devices.items():
                if meta.scope_key == scope_key:
                    self.missing_active[rule_id][d] = True
                    return True
        if rule.kind in ("correlation", "offline"):
            g = self.gtrk.setdefault((rule_id, scope_key), GroupTracker())
            g.active = True
            if rule.kind == "offline" and not g.members:  # nobody of the group is offline any more
                g.clear_since = max(float(np.max(self.clock)), 0.0) if np.isfinite(self.clock).any() else None
            return True
        if rule.kind in ("count", "event", "watchlist"):
            device_key = scope_key.split("#", 1)[0]
            for d, meta in self.devices.items():
                if meta.scope_key == device_key:
                    e = self.etrk.setdefault((rule_id, d), EventTracker())
                    e.active.setdefault(scope_key, None)
                    return True
        return False

    def active_keys(self) -> set[tuple[str, str]]:
        """(rule, scope) of every alarm this engine believes is raised (with a row of its own)."""
        keys = {(rid, self.devices[d].scope_key) for (rid, d), t in self.ctrk.items() if t.active and not t.grouped}
        keys |= {(rid, k) for (rid, k), g in self.gtrk.items() if g.active}
        keys |= {(rid, s) for (rid, _d), e in self.etrk.items() for s in e.active}
        for rid, act in self.missing_active.items():
            keys |= {(rid, self.devices[int(d)].scope_key) for d in np.flatnonzero(act)}
        return keys

    # -- maintenance ---------------------------------------------------------------------------
    def _maintenance(self, rows: Rows) -> None:
        for i, mw in enumerate(self.ruleset.maintenance):
            mask = self.maint_masks[i][rows.dev] & (rows.metric == self.metric_ix[mw.condition.metric])
            if not mask.any():
                continue
            sub = rows.take(np.flatnonzero(mask))
            cond = self._test(mw.condition, sub.value, sub.text)
            ends = np.r_[sub.dev[1:] != sub.dev[:-1], True]
            self.maint_hyst[i][sub.dev[ends]] = cond[ends]
        if self.maint_hyst:
            self.maint = np.logical_or.reduce(self.maint_hyst) if len(self.maint_hyst) > 1 else self.maint_hyst[0]

    # -- vectorised condition evaluation --------------------------------------------------------
    @staticmethod
    def _test(c: Condition, v: F64, s: Obj) -> B:
        known = ~np.isnan(v) | (s != None)  # noqa: E711 - elementwise on an object array
        if c.op is not None:
            target = c.value
            if isinstance(target, str):
                eq = s == target
                return np.asarray(eq if c.op == "==" else (known & ~eq) if c.op == "!=" else np.zeros(len(v), bool), bool)
            x = float(target) if target is not None else np.nan
            with np.errstate(invalid="ignore"):
                res = {">": v > x, ">=": v >= x, "<": v < x, "<=": v <= x, "==": v == x, "!=": (v != x) & known}[c.op]
            return np.asarray(res, bool)
        items = c.in_ if c.in_ is not None else c.not_in
        assert items is not None
        strs = {i for i in items if isinstance(i, str)}
        nums = np.array([float(i) for i in items if not isinstance(i, str)], float)
        hit = np.isin(v, nums) if len(nums) else np.zeros(len(v), bool)
        for label in strs:  # elementwise compare runs in C; a Python set lookup per row does not
            hit |= np.asarray(s == label, bool)
        return hit if c.in_ is not None else (known & ~hit)

    def _rule_rows(self, rule: Rule, rows: Rows) -> Rows | None:
        metrics = np.array([self.metric_ix[c.metric] for c in [*rule.conditions, *(rule.clear_when or [])]], np.int64)
        mask = self.scope_mask[rule.id][rows.dev] & np.isin(rows.metric, metrics)
        if not mask.any():
            return None
        return rows.take(np.flatnonzero(mask))

    def _conditions(self, rule: Rule, sub: Rows, *, clearing: bool = False) -> B:
        """The rule's condition (or with `clearing`, its clear_when) at every row of `sub` (sorted by device, ts)."""
        conditions = (rule.clear_when or []) if clearing else rule.conditions
        offset = 1000 if clearing else 0
        n = len(sub)
        dev = sub.dev
        pos = np.arange(n)
        starts = np.r_[True, dev[1:] != dev[:-1]]
        seg_first = pos[starts][np.cumsum(starts) - 1]
        result = np.ones(n, bool)
        for ci, c in enumerate(conditions, start=offset):
            mi = self.metric_ix[c.metric]
            has = sub.metric == mi
            if c.rate:
                v = self._rates(mi, sub, has, pos, seg_first)
                s = np.full(n, None, object)
            else:
                idx = np.maximum.accumulate(np.where(has, pos, -1))
                valid = idx >= seg_first
                safe = np.where(valid, idx, 0)
                v = np.where(valid, sub.value[safe], self.carry_v[mi][dev])
                s = np.where(valid, sub.text[safe], self.carry_s[mi][dev])
            if c.rate and c.absolute:
                v = np.abs(v)
            on = self._test(c, v, s)
            if c.clear is not None:
                with np.errstate(invalid="ignore"):
                    off = (v <= c.clear) if c.op in (">", ">=") else (v >= c.clear)
                key = (rule.id, ci)
                carry = self.hyst.setdefault(key, np.zeros(self.size, bool))
                decisive = on | off
                didx = np.maximum.accumulate(np.where(decisive, pos, -1))
                dvalid = didx >= seg_first
                on = np.where(dvalid, on[np.where(dvalid, didx, 0)], carry[dev])
                ends = np.r_[dev[1:] != dev[:-1], True]
                carry[dev[ends]] = on[ends]
            result &= on
        self.evaluations += n * len(conditions)
        return result

    def _rates(self, mi: int, sub: Rows, has: B, pos: I64, seg_first: I64) -> F64:
        p = np.flatnonzero(has)
        n = len(sub)
        if not len(p):
            return np.asarray(self.carry_rate[mi][sub.dev], float)
        pd, pt, pv = sub.dev[p], sub.ts[p], sub.value[p]
        prev_t = np.empty(len(p))
        prev_v = np.empty(len(p))
        prev_t[1:], prev_v[1:] = pt[:-1], pv[:-1]
        first = np.r_[True, pd[1:] != pd[:-1]]
        prev_t[first] = self.carry_t[mi][pd[first]]
        prev_v[first] = self.carry_v[mi][pd[first]]
        dt = pt - prev_t
        with np.errstate(invalid="ignore", divide="ignore"):
            rate = np.where(dt > 0, (pv - prev_v) / dt, np.nan)
        full = np.full(n, np.nan)
        full[p] = rate
        idx = np.maximum.accumulate(np.where(has, pos, -1))
        valid = idx >= seg_first
        out = np.where(valid, full[np.where(valid, idx, 0)], self.carry_rate[mi][sub.dev])
        ends = np.r_[pd[1:] != pd[:-1], True]
        self.carry_rate[mi][pd[ends]] = rate[ends]
        return np.asarray(out, float)

    def _change_points(self, rule: Rule, sub: Rows, cond: Any) -> tuple[I64, I64, F64, Any, I64]:
        """Rows (last of each device+ts) where the condition flips, and each device's last row.

        `cond` is a bool array, or for rules with `clear_when` an int8 signal (1 raise, 0 clear,
        -1 neither: hold whatever the alarm is)."""
        dev, ts = sub.dev, sub.ts
        last = np.r_[(dev[1:] != dev[:-1]) | (ts[1:] != ts[:-1]), True]
        g = np.flatnonzero(last)
        cg, dg, tg = cond[g], dev[g], ts[g]
        state = self.sig_state[rule.id] if rule.clear_when else self.cond_state[rule.id]
        prev = np.empty(len(g), state.dtype)
        prev[1:] = cg[:-1]
        first = np.r_[True, dg[1:] != dg[:-1]]
        prev[first] = state[dg[first]]
        changes = np.flatnonzero(cg != prev)
        dev_end = np.flatnonzero(np.r_[dg[1:] != dg[:-1], True])
        state[dg[dev_end]] = cg[dev_end]
        return changes, dg, tg, cg, dev_end

    def _condition_rule(self, rule: Rule, rows: Rows, out: list[Action]) -> None:
        sub = self._rule_rows(rule, rows)
        if sub is None:
            return
        cond: Any = self._conditions(rule, sub)
        if rule.clear_when:
            clearing = self._conditions(rule, sub, clearing=True)
            cond = np.where(cond, 1, np.where(clearing, 0, -1)).astype(np.int8)
        changes, dg, tg, cg, dev_end = self._change_points(rule, sub, cond)
        if rule.group is not None:  # devices meet in a group: walk their changes in time order
            changes = changes[np.argsort(tg[changes], kind="stable")]
        ctrk = self.ctrk
        for k in changes:
            d = int(dg[k])
            trk = ctrk.get((rule.id, d))
            if trk is None:
                trk = ctrk[(rule.id, d)] = CondTracker()
            sig = int(cg[k])
            holds = sig == 1 or (sig == -1 and trk.active) if rule.clear_when else bool(sig)
            self._cond_step(rule, self.devices[d], trk, float(tg[k]), holds, out)
        for k in dev_end:
            d = int(dg[k])
            trk = ctrk.get((rule.id, d))
            if trk is not None:
                self._cond_due(rule, self.devices[d], trk, float(tg[k]), out)

    # -- condition trackers ----------------------------------------------------------------------
    def _cond_step(self, rule: Rule, meta: DeviceMeta, trk: CondTracker, t: float, cond: bool, out: list[Action]) -> None:
        self._cond_due(rule, meta, trk, t, out)
        if cond and not trk.cond:
            trk.cond, trk.since, trk.clear_since = True, t, None
            if rule.group is not None:
                self._group_member(rule, meta, t, True, out)
        elif not cond and trk.cond:
            trk.cond, trk.since = False, None
            if trk.active:
                trk.clear_since = t
            if rule.group is not None:
                self._group_member(rule, meta, t, False, out)
        elif not cond and trk.active and trk.clear_since is None:
            trk.clear_since = t
        self._cond_due(rule, meta, trk, t, out)

    def _raise_time(self, rule: Rule, meta: DeviceMeta, since: float, t: float) -> float | None:
        if rule.schedule is None:
            return since + rule.for_
        best: float | None = None
        for probe in (since, t):
            ws = window_start(rule.schedule, meta.tz, probe)
            if ws is None:
                continue
            at = max(since, ws) + rule.for_
            if at < window_end(rule.schedule, meta.tz, ws) and at <= t and (best is None or at < best):
                best = at
        return best

    def _cond_due(self, rule: Rule, meta: DeviceMeta, trk: CondTracker, t: float, out: list[Action]) -> None:
        if trk.cond and not trk.active and trk.since is not None:
            at = self._raise_time(rule, meta, trk.since, t)
            if at is not None and at <= t and not (rule.suppress_in_maintenance and self.suppressed(meta.id)):
                self._cond_raise(rule, meta, trk, at, out)
        if trk.active and not trk.cond and trk.clear_since is not None:
            need = max(rule.clear_for, rule.flap_clear_for) if trk.flapping else rule.clear_for
            if trk.clear_since + need <= t:
                self._cond_clear(rule, meta, trk, trk.clear_since + need, "recovered", out)
        if trk.active and rule.schedule is not None and not in_schedule(rule.schedule, meta.tz, t):
            start = window_start(rule.schedule, meta.tz, trk.raised_at) if trk.raised_at is not None else None
            end = window_end(rule.schedule, meta.tz, start) if start is not None else t
            self._cond_clear(rule, meta, trk, min(t, end), "outside schedule", out)
            if trk.cond:
                trk.since = min(t, end)

    def _cond_raise(self, rule: Rule, meta: DeviceMeta, trk: CondTracker, at: float, out: list[Action]) -> None:
        trk.active, trk.raised_at, trk.clear_since = True, at, None
        trk.raises.append(at)
        while trk.raises and trk.raises[0] < at - rule.flap_window:
            trk.raises.popleft()
        if rule.group is not None:
            self._group_check(rule, meta, at, out)
            gkey = meta.group_key(rule.group.by)
            g = self.gtrk.get((rule.id, gkey)) if gkey else None
            if g is not None and g.active:
                trk.grouped = True
                g.children.add(meta.id)
                out.append(Annotate(rule.id, gkey or "", {"devices": sorted(self.devices[c].device for c in g.children)}))
                return
        trk.grouped = False
        values = self._values(rule, meta.id)
        detail = {"rule_kind": rule.kind, "since": iso(trk.since or at), "values": values}
        out.append(Raise(rule.id, meta.scope_key, meta.site, meta.id, at, rule.alarm_kind, rule.severity,
                         _fmt(rule.title, self.meta_values(meta, **values)), detail))
        if len(trk.raises) >= rule.flap_count and not trk.flapping:
            trk.flapping = True
            out.append(Annotate(rule.id, meta.scope_key, {"flapping": True, "raises_in_window": len(trk.raises)}))

    def _values(self, rule: Rule, d: int) -> dict[str, Any]:
        return {self.metric_names[mi]: self._carry_value(mi, d) for mi in sorted({self.metric_ix[c.metric] for c in rule.conditions})}

    def _with_values(self, a: Raise) -> Raise:
        """Raises found mid-batch carry the device's latest values (known once the batch is folded in)."""
        rule = self.by_id[a.rule_id]
        if rule.kind not in CONDITION_KINDS or a.device_id is None or "values" not in a.detail:
            return a
        values = self._values(rule, a.device_id)
        meta = self.devices[a.device_id]
        return Raise(a.rule_id, a.scope_key, a.site, a.device_id, a.at, a.kind, a.severity,
                     _fmt(rule.title, self.meta_values(meta, **values)), {**a.detail, "values": values}, a.parent)

    def _cond_clear(self, rule: Rule, meta: DeviceMeta, trk: CondTracker, at: float, reason: str, out: list[Action]) -> None:
        was_grouped = trk.grouped
        trk.active, trk.clear_since, trk.grouped = False, None, False
        if trk.flapping:
            trk.flapping = False
        if not was_grouped:
            out.append(Clear(rule.id, meta.scope_key, at, reason))

    def _carry_value(self, mi: int, d: int) -> Any:
        s = self.carry_s[mi][d]
        if s is not None:
            return s
        v = self.carry_v[mi][d]
        return None if np.isnan(v) else float(v)

    def _maybe_forget(self, rid: str, d: int, trk: CondTracker, now: float) -> None:
        if not trk.cond and not trk.active and (not trk.raises or trk.raises[-1] < now - self.by_id[rid].flap_window):
            del self.ctrk[(rid, d)]

    def _offline_reset(self, d: int, t: float, out: list[Action]) -> None:
        """A device that went offline says nothing about its state: pending windows start over."""
        for rule in self._resets_on_offline:
            trk = self.ctrk.get((rule.id, d))
            if trk is not None:
                self._cond_due(rule, self.devices[d], trk, t, out)
                if trk.cond and not trk.active:
                    trk.cond, trk.since = False, None
                    self.cond_state[rule.id][d] = False
                    if rule.clear_when:
                        self.sig_state[rule.id][d] = 0
            if rule.kind == "correlation":
                meta = self.devices[d]
                key = meta.group_key(rule.group_by or "zone")
                g = self.gtrk.get((rule.id, key)) if key else None
                if g is not None and not g.active and d in g.members:
                    del g.members[d]
                    self.cond_state[rule.id][d] = False

    # -- root-cause grouping (offline rules) ----------------------------------------------------------
    def _group_member(self, rule: Rule, meta: DeviceMeta, t: float, on: bool, out: list[Action]) -> None:
        assert rule.group is not None
        key = meta.group_key(rule.group.by)
        if key is None:
            return
        g = self.gtrk.setdefault((rule.id, key), GroupTracker(site=meta.site))
        if on:
            g.members[meta.id] = t
            g.clear_since = None
        else:
            g.members.pop(meta.id, None)
            g.children.discard(meta.id)
            if g.active and not g.members:
                g.clear_since = t
            self._group_due(rule, key, g, t, out)

    def _group_check(self, rule: Rule, meta: DeviceMeta, at: float, out: list[Action]) -> None:
        grp = rule.group
        assert grp is not None
        key = meta.group_key(grp.by)
        g = self.gtrk.get((rule.id, key)) if key else None
        if g is None or g.active or key is None:
            return
        since = self.ctrk[(rule.id, meta.id)].since or at
        recent = [d for d, s in g.members.items() if s >= since - grp.window]
        if len(recent) < grp.min_devices:
            return
        g.active, g.clear_since = True, None
        label = key.split("/", 1)[1]
        out.append(Raise(rule.id, key, meta.site, None, at, grp.alarm, grp.severity,
                         _fmt(grp.title, {"count": len(g.members), "group": label, "site": meta.site}),
                         {"rule_kind": "group", "devices": sorted(self.devices[d].device for d in g.members)}))
        for d in g.members:
            trk = self.ctrk.get((rule.id, d))
            if d != meta.id and trk is not None and trk.active and not trk.grouped:
                out.append(Link(rule.id, self.devices[d].scope_key, (rule.id, key)))
            g.children.add(d)

    def _group_due(self, rule: Rule, key: str, g: GroupTracker, t: float, out: list[Action]) -> None:
        need = rule.clear_for
        if g.active and not g.members and g.clear_since is not None and g.clear_since + need <= t:
            g.active = False
            out.append(Clear(rule.id, key, g.clear_since + need, "recovered"))
            g.clear_since = None
            g.children.clear()
        if rule.kind == "correlation" and g.active and g.members:
            g.clear_since = None

    # -- correlation across devices -------------------------------------------------------------------
    def _correlation_rule(self, rule: Rule, rows: Rows, out: list[Action]) -> None:
        sub = self._rule_rows(rule, rows)
        if sub is None:
            return
        cond = self._conditions(rule, sub)
        changes, dg, tg, cg, _ = self._change_points(rule, sub, cond)
        for k in changes[np.argsort(tg[changes], kind="stable")]:  # across devices: time order
            d = int(dg[k])
            meta = self.devices[d]
            key = meta.group_key(rule.group_by or "zone")
            if key is None:
                continue
            t = float(tg[k])
            g = self.gtrk.setdefault((rule.id, key), GroupTracker(site=meta.site))
            self._group_due(rule, key, g, t, out)
            if cg[k]:
                g.members[d] = t
                g.clear_since = None
                window = rule.window or 0.0
                recent = [m for m, s in g.members.items() if s >= t - window
                          and not (rule.suppress_in_maintenance and self.suppressed(m))]
                if not g.active and len(recent) >= rule.min_devices:
                    g.active = True
                    names = sorted(self.devices[m].device for m in recent)
                    label = key.split("/", 1)[1]
                    out.append(Raise(rule.id, key, meta.site, d if rule.min_devices == 1 else None, t, rule.alarm_kind,
                                     rule.severity, _fmt(rule.title, self.meta_values(meta, group=label, count=len(recent))),
                                     {"rule_kind": rule.kind, "devices": names}))
            else:
                g.members.pop(d, None)
                if g.active and not g.members:
                    g.clear_since = t
                self._group_due(rule, key, g, t, out)

    # -- missing data ---------------------------------------------------------------------------------
    def _missing_rows(self, rule: Rule, rows: Rows, out: list[Action]) -> None:
        mask = self.scope_mask[rule.id][rows.dev]
        if rule.metric is not None:
            mask &= rows.metric == self.metric_ix[rule.metric]
        else:
            mask &= rows.metric != self.metric_ix[ONLINE]  # a status change is not data
        if not mask.any():
            return
        sub = rows.take(np.flatnonzero(mask))
        self._missing_times(rule, sub.dev, sub.ts, out)

    def _missing_events(self, rule: Rule, evs: Sequence[EventIn], out: list[Action]) -> None:
        mask = self.scope_mask[rule.id]
        picked = [(d, t) for t, d, c, _x in evs if mask[d] and c not in ("online", "offline")]
        if picked:
            dev = np.array([p[0] for p in picked], np.int64)
            ts = np.array([p[1] for p in picked], float)
            order = np.lexsort((ts, dev))
            self._missing_times(rule, dev[order], ts[order], out)

    def _missing_times(self, rule: Rule, dev: I64, ts: F64, out: list[Action]) -> None:
        """Gaps longer than `after` between consecutive data of a device raise and clear."""
        assert rule.after is not None
        seen = self.seen[rule.id]
        active = self.missing_active[rule.id]
        prev = np.empty(len(ts))
        prev[1:] = ts[:-1]
        first = np.r_[True, dev[1:] != dev[:-1]]
        prev[first] = seen[dev[first]]
        with np.errstate(invalid="ignore"):
            gap = (ts - prev) > rule.after
        for k in np.flatnonzero(gap | (first & active[dev])):
            d = int(dev[k])
            meta = self.devices[d]
            if gap[k] and not active[d]:
                self._missing_raise(rule, meta, float(prev[k]) + rule.after, out)
            if active[d]:
                active[d] = False
                out.append(Clear(rule.id, meta.scope_key, float(ts[k]), "data again"))
        ends = np.r_[dev[1:] != dev[:-1], True]
        np.fmax.at(seen, dev[ends], ts[ends])

    def _missing_raise(self, rule: Rule, meta: DeviceMeta, at: float, out: list[Action]) -> None:
        if rule.suppress_in_maintenance and self.suppressed(meta.id):
            return
        self.missing_active[rule.id][meta.id] = True
        out.append(Raise(rule.id, meta.scope_key, meta.site, meta.id, at, rule.alarm_kind, rule.severity,
                         _fmt(rule.title, self.meta_values(meta)), {"rule_kind": rule.kind, "last_data": iso(at - (rule.after or 0))}))

    def _missing_due(self, rule: Rule, seen: F64, now: float, out: list[Action]) -> None:
        assert rule.after is not None
        active = self.missing_active[rule.id]
        # A device known to be offline is already an alarm (offline, or its building's power
        # loss): its silence is not news, and 200 "no data" rows would bury the root cause.
        # Back online by a status message: the silence counts from then.
        on = self.metric_ix[ONLINE]
        offline = self.carry_v[on] == 0
        since = np.fmax(seen, np.where(self.carry_v[on] == 1, self.carry_t[on], np.nan))
        with np.errstate(invalid="ignore"):
            stale = self.scope_mask[rule.id] & ((now - since) > rule.after) & ~active & ~offline
        for d in np.flatnonzero(stale):
            self._missing_raise(rule, self.devices[int(d)], float(since[d]) + rule.after, out)

    # -- event rules ----------------------------------------------------------------------------------
    def _event_rule(self, rule: Rule, evs: Sequence[EventIn], out: list[Action]) -> None:
        codes = rule.codes or []
        mapping = codes if isinstance(codes, dict) else {}
        wanted = set(codes)
        clear_codes = set(rule.clear_codes)
        mask = self.scope_mask[rule.id]
        wl = self.ruleset.watchlists.get(rule.watchlist or "", frozenset())
        for t, d, code, data in evs:
            if not mask[d] or (code not in wanted and code not in clear_codes):
                continue
            if t < self.clock[d] - 3600:  # ancient redelivery: stored, not re-alarmed
                continue
            meta = self.devices[d]
            e = self.etrk.setdefault((rule.id, d), EventTracker())
            self._event_due(rule, meta, e, t, out)
            ended = (rule.inactive_field is not None and isinstance(data, dict)
                     and data.get(rule.inactive_field) is False and code in wanted)
            if ended:  # the terminal says this code's condition is over (GB/T 24476 `active: false`)
                scope = f"{meta.scope_key}#{code}" if rule.per_code else meta.scope_key
                if scope in e.active:
                    del e.active[scope]
                    out.append(Clear(rule.id, scope, t, f"event {code} ended"))
                continue
            if code in clear_codes:
                for scope in list(e.active):
                    del e.active[scope]
                    out.append(Clear(rule.id, scope, t, f"event {code}"))
                continue
            if rule.suppress_in_maintenance and self.suppressed(d):
                continue
            if rule.kind == "count":
                e.times.append(t)
                while e.times and e.times[0] < t - (rule.window or 0):
                    e.times.popleft()
                if len(e.times) >= (rule.count or 1) and meta.scope_key not in e.active:
                    e.active[meta.scope_key] = None
                    out.append(Raise(rule.id, meta.scope_key, meta.site, d, t, rule.alarm_kind, rule.severity,
                                     _fmt(rule.title, self.meta_values(meta, count=len(e.times), code=code)),
                                     {"rule_kind": rule.kind, "count": len(e.times), "window_s": rule.window}))
                continue
            value: Any = None
            if rule.kind == "watchlist":
                value = (data or {}).get(rule.field or "") if isinstance(data, dict) else None
                if value is None or str(value) not in wl:
                    continue
                scope = f"{meta.scope_key}#{value}"
            else:
                scope = f"{meta.scope_key}#{code}" if rule.per_code else meta.scope_key
            spec = mapping.get(code)
            title = (spec.title if spec and spec.title else rule.title)
            severity = (spec.severity if spec and spec.severity else rule.severity)
            kind = (spec.alarm if spec and spec.alarm else rule.alarm_kind)
            clear_after = rule.clear_after if rule.clear_after is not None else (0.0 if rule.kind == "watchlist" else None)
            deadline = None if clear_after is None else t + clear_after
            if scope in e.active:
                e.active[scope] = deadline
                continue
            e.active[scope] = deadline
            out.append(Raise(rule.id, scope, meta.site, d, t, kind, severity,
                             _fmt(title, self.meta_values(meta, code=code, value=value)),
                             {"rule_kind": rule.kind, "code": code, "data": data if isinstance(data, dict) else None}))
            if deadline is not None and deadline <= t:
                del e.active[scope]
                out.append(Clear(rule.id, scope, t, "momentary event"))

    def _event_due(self, rule: Rule, meta: DeviceMeta, e: EventTracker, now: float, out: list[Action]) -> None:
        if rule.kind == "count":
            while e.times and e.times[0] < now - (rule.window or 0):
                e.times.popleft()
            if meta.scope_key in e.active and len(e.times) < (rule.count or 1):
                del e.active[meta.scope_key]
                out.append(Clear(rule.id, meta.scope_key, now, "rate back to normal"))
            return
        for scope, deadline in list(e.active.items()):
            if deadline is not None and deadline <= now:
                del e.active[scope]
                out.append(Clear(rule.id, scope, deadline, "clear_after elapsed"))

    # -- carry ---------------------------------------------------------------------------------------
    def _update_carry(self, rows: Rows) -> None:
        key = rows.metric * self.size + rows.dev
        order = np.argsort(key, kind="stable")
        k = key[order]
        ends = order[np.r_[k[1:] != k[:-1], True]]
        m, d = rows.metric[ends], rows.dev[ends]
        self.carry_v[m, d] = rows.value[ends]
        self.carry_s[m, d] = rows.text[ends]
        self.carry_t[m, d] = rows.ts[ends]
