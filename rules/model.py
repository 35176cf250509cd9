"""Rule definitions as YAML (one file or a folder), validated with file:line: field errors.

A rule file holds `rules:` (a list), optional `maintenance:` (conditions that put a device in
maintenance/inspection mode, which suppresses its alarms) and optional `watchlists:` (named
lists of plates or cards). Durations are seconds or strings such as "20 s", "2 min", "1 h".
"""

from __future__ import annotations

import re
from datetime import time
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, model_validator

from hub.errors import ConfigError
from hub.yamlfile import LocatedYaml, load_yaml, validation_error

_DURATION = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?)\s*(ms|s|sec|secs|seconds?|m|min|mins|minutes?|h|hours?|d|days?)?\s*$")
_UNIT_S = {"ms": 0.001, "s": 1, "sec": 1, "secs": 1, "second": 1, "seconds": 1, "m": 60, "min": 60,
           "mins": 60, "minute": 60, "minutes": 60, "h": 3600, "hour": 3600, "hours": 3600,
           "d": 86400, "day": 86400, "days": 86400}


def parse_duration(raw: Any) -> float:
    """'20 s' / '2 min' / 1.5 → seconds; a bad value raises ValueError naming the forms allowed."""
    if isinstance(raw, bool):
        raise ValueError("expected a duration such as 20, '20 s' or '2 min'")
    if isinstance(raw, int | float):
        value = float(raw)
    elif isinstance(raw, str) and (m := _DURATION.match(raw)):
        value = float(m.group(1)) * _UNIT_S[m.group(2) or "s"]
    else:
        raise ValueError(f"{raw!r} is not a duration such as 20, '20 s', '2 min' or '1 h'")
    if value < 0:
        raise ValueError("a duration cannot be negative")
    return value


Duration = Annotated[float, BeforeValidator(parse_duration)]
Id = Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9_.-]*$", max_length=100)]
Severity = Literal["critical", "major", "minor", "warning"]
Scalar = float | bool | str
Op = Literal[">", ">=", "<", "<=", "==", "!="]
GroupBy = Literal["zone", "building", "grid", "floor", "site"]
Weekday = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
ALL_DAYS: tuple[Weekday, ...] = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Scope(_Strict):
    """Which devices a rule watches; every list given must match (empty = any)."""

    sites: list[str] = Field(default_factory=list)
    buildings: list[str] = Field(default_factory=list)
    grids: list[str] = Field(default_factory=list)
    kinds: list[str] = Field(default_factory=list)
    models: list[str] = Field(default_factory=list)
    devices: list[str] = Field(default_factory=list)


class Condition(_Strict):
    """One test on a metric's latest value: `op`/`value`, or `in`/`not_in` for states.

    `clear` gives hysteresis for numeric ops: the condition holds from the moment `value` is
    crossed until `clear` is reached (for > and >= it turns off when the value is <= clear).
    `rate: true` tests the metric's rate of change per second instead of its value.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    metric: Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]*$")]
    op: Op | None = None
    value: Scalar | None = None
    in_: list[Scalar] | None = Field(None, alias="in")
    not_in: list[Scalar] | None = None
    clear: float | None = None
    rate: bool = False
    absolute: bool = Field(False, description="rate: compare the absolute rate")

    @model_validator(mode="after")
    def _one_test(self) -> Condition:
        given = sum(x is not None for x in (self.op, self.in_, self.not_in))
        if given != 1:
            raise ValueError("give exactly one of op (with value), in, or not_in")
        if self.op is not None and self.value is None:
            raise ValueError("op needs a value")
        if self.clear is not None:
            if self.op not in (">", ">=", "<", "<="):
                raise ValueError("clear (hysteresis) needs a numeric op: >, >=, < or <=")
            if not isinstance(self.value, int | float) or isinstance(self.value, bool):
                raise ValueError("clear (hysteresis) needs a numeric value")
            upper = self.op in (">", ">=")
            if (upper and self.clear > self.value) or (not upper and self.clear < self.value):
                raise ValueError("clear must lie on the recovered side of value")
        if self.rate and (self.op is None or isinstance(self.value, str | bool)):
            raise ValueError("rate needs a numeric op and value")
        return self


class Schedule(_Strict):
    """When a rule may raise, in the site's local time; `end` before `start` runs past midnight."""

    start: time
    end: time
    days: list[Weekday] = Field(default_factory=lambda: list(ALL_DAYS))


class Grouping(_Strict):
    """Root-cause grouping: many devices of one building offline → one parent alarm."""

    by: GroupBy = "building"
    min_devices: int = Field(3, ge=2)
    window: Duration = 60.0
    alarm: str = "power_loss"
    title: str = "{count} devices offline in {group}: likely power or network loss"
    severity: Severity = "major"


class RootCauseOf(_Strict):
    """Root cause within one device: this rule's alarm explains alarms of `kinds` on the same device.

    When it is raised, the open alarms of those kinds on its device raised at most `window` before
    it become its children; while it is up, new ones are born its children. Children keep their
    own lifecycle; dispatch opens no order for them (docs/rules.md, docs/workorders.md).
    """

    kinds: list[Annotated[str, Field(min_length=1)]] = Field(min_length=1)
    window: Duration = 120.0

    @model_validator(mode="after")
    def _distinct(self) -> RootCauseOf:
        dup = sorted({k for k in self.kinds if self.kinds.count(k) > 1})
        if dup:
            raise ValueError(f"kinds named twice: {', '.join(dup)}")
        return self


class EventAlarm(_Strict):
    title: str | None = None
    severity: Severity | None = None
    alarm: str | None = None


class Rule(_Strict):
    """One rule; `kind` decides which other fields apply (checked below)."""

    id: Id
    kind: Literal["threshold", "state", "rate", "composite", "offline", "missing", "count",
                  "event", "correlation", "watchlist"]
    title: str
    severity: Severity = "major"
    alarm: str | None = Field(None, description="alarm kind; default the rule id")
    scope: Scope = Scope()
    enabled: bool = True
    # condition kinds
    condition: Condition | None = None
    all: list[Condition] | None = None
    for_: Duration = Field(0.0, alias="for")
    clear_for: Duration = 0.0
    clear_when: list[Condition] | None = Field(
        None, description="once raised, the alarm clears only when all of these hold (for clear_for)")
    schedule: Schedule | None = None
    # missing data
    metric: str | None = None
    after: Duration | None = None
    # count / event / watchlist
    codes: list[str] | dict[str, EventAlarm] | None = None
    count: int | None = Field(None, ge=1)
    window: Duration | None = None
    clear_codes: list[str] = Field(default_factory=list)
    inactive_field: str | None = Field(
        None, description="event data field whose false value means the code's condition ended")
    clear_after: Duration | None = None
    per_code: bool = True
    field: str | None = None
    watchlist: str | None = None
    # correlation
    group_by: GroupBy | None = None
    min_devices: int = Field(2, ge=1)
    # offline root-cause grouping
    group: Grouping | None = None
    # root cause of other alarms on the same device
    root_cause_of: RootCauseOf | None = None
    # alarm quality
    flap_count: int = Field(4, ge=2, description="raises within flap_window that mean flapping")
    flap_window: Duration = 600.0
    flap_clear_for: Duration = 120.0
    suppress_in_maintenance: bool = True

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    @property
    def alarm_kind(self) -> str:
        return self.alarm or self.id

    @property
    def conditions(self) -> list[Condition]:
        if self.all:
            return list(self.all)
        if self.condition is not None:
            return [self.condition]
        return []

    @model_validator(mode="after")
    def _fields_for_kind(self) -> Rule:
        k = self.kind
        need: dict[str, bool] = {}
        if k in ("threshold", "state", "rate", "correlation"):
            need["condition"] = self.condition is not None
        if k == "composite":
            need["all"] = bool(self.all) and len(self.all or []) >= 1
        if k == "missing":
            need["after"] = self.after is not None
        if k in ("count", "event", "watchlist"):
            need["codes"] = bool(self.codes)
        if k == "count":
            need["count"] = self.count is not None
            need["window"] = self.window is not None
        if k == "watchlist":
            need["field"] = self.field is not None
            need["watchlist"] = self.watchlist is not None
        if k == "correlation":
            need["group_by"] = self.group_by is not None
            need["window"] = self.window is not None
        missing = [name for name, ok in need.items() if not ok]
        if missing:
            raise ValueError(f"a {k} rule needs {', '.join(missing)}")
        if k == "threshold":
            c = self.condition
            assert c is not None
            if c.op not in (">", ">=", "<", "<=") or c.rate:
                raise ValueError("a threshold rule needs a numeric op: >, >=, < or <=")
        if k == "rate" and self.condition is not None and not self.condition.rate:
            raise ValueError("a rate rule's condition needs rate: true")
        if self.clear_when and k not in ("threshold", "state", "composite"):
            raise ValueError("clear_when applies to threshold, state and composite rules")
        if self.inactive_field is not None and k != "event":
            raise ValueError("inactive_field applies to event rules")
        if self.group is not None and k != "offline":
            raise ValueError("group (root-cause grouping) applies to offline rules")
        if self.root_cause_of is not None:
            if k == "correlation":
                raise ValueError("root_cause_of needs an alarm about one device; a correlation alarm is about a group")
            own = sorted(self.alarm_kinds() & set(self.root_cause_of.kinds))
            if own:
                raise ValueError(f"root_cause_of: a rule cannot be the root cause of its own alarm kind {own[0]!r}")
        return self

    def alarm_kinds(self) -> set[str]:
        """Every alarm kind this rule can raise (per-code overrides and the group parent included)."""
        kinds = {self.alarm_kind}
        if isinstance(self.codes, dict):
            kinds |= {spec.alarm for spec in self.codes.values() if spec.alarm}
        if self.group is not None:
            kinds.add(self.group.alarm)
        return kinds


class MaintenanceWhen(_Strict):
    """A device matching `scope` whose `condition` holds is in maintenance: no new alarms."""

    scope: Scope = Scope()
    condition: Condition


class RuleFile(_Strict):
    rules: list[Rule] = Field(default_factory=list)
    maintenance: list[MaintenanceWhen] = Field(default_factory=list)
    watchlists: dict[str, list[str]] = Field(default_factory=dict)


class RuleSet(BaseModel):
    """The merged rules of every file, with the files and their modification times."""

    model_config = ConfigDict(frozen=True)

    rules: list[Rule]
    maintenance: list[MaintenanceWhen]
    watchlists: dict[str, frozenset[str]]
    files: list[Path]
    mtimes: dict[str, float]

    @property
    def lookback_s(self) -> float:
        """How much history a warm start replays to rebuild every window (capped at 6 h)."""
        longest = 60.0
        for r in self.rules:
            for d in (r.for_, r.clear_for, r.after, r.window, r.clear_after, r.flap_clear_for,
                      r.group.window if r.group else None):
                if d:
                    longest = max(longest, d)
        return min(longest * 2 + 60.0, 6 * 3600.0)

    def root_cause(self, rule_id: str) -> RootCauseOf | None:
        """The `root_cause_of` of rule `rule_id`, if it has one."""
        return next((r.root_cause_of for r in self.rules if r.id == rule_id), None)

    def roots_of(self, kind: str) -> list[tuple[str, float]]:
        """(rule id, window in s) of every rule that is the root cause of alarms of `kind`."""
        return [(r.id, r.root_cause_of.window) for r in self.rules
                if r.root_cause_of is not None and kind in r.root_cause_of.kinds]

    def changed(self) -> bool:
        """True if a file was modified, added or removed since this set was loaded."""
        for f in self.files:
            try:
                if f.stat().st_mtime != self.mtimes.get(str(f)):
                    return True
            except OSError:
                return True
        return False


def rule_files(path: Path) -> list[Path]:
    if path.is_dir():
        files = sorted([*path.glob("*.yaml"), *path.glob("*.yml")])
        if not files:
            raise ConfigError(f"{path}: rules folder holds no .yaml files")
        return files
    if not path.exists():
        raise ConfigError(f"{path}: rules file not found")
    return [path]


def load_rules(path: Path | str, *, known_metrics: dict[str, set[str]] | None = None) -> RuleSet:
    """Parse and check every file; one `ConfigError` lists every problem as file:line: field.

    `known_metrics` (device kind → metric names, from the registry) lets the check catch a
    misspelt metric for a rule scoped to kinds.
    """
    problems: list[str] = []
    rules: list[Rule] = []
    maintenance: list[MaintenanceWhen] = []
    watchlists: dict[str, frozenset[str]] = {}
    seen: dict[str, str] = {}
    files = rule_files(Path(path))
    mtimes: dict[str, float] = {}
    located: list[tuple[LocatedYaml, RuleFile]] = []
    for file in files:
        mtimes[str(file)] = file.stat().st_mtime
        source = load_yaml(file)
        data = source.data if source.data is not None else {}
        if not isinstance(data, dict):
            problems.append(f"{file}:1: expected a mapping with rules/maintenance/watchlists")
            continue
        try:
            content = RuleFile.model_validate(data)
        except ValidationError as exc:
            problems.append(str(validation_error(exc, source)))
            continue
        located.append((source, content))
        for name, values in content.watchlists.items():
            watchlists[name] = frozenset(watchlists.get(name, frozenset()) | set(values))
    for source, content in located:
        for i, rule in enumerate(content.rules):
            where = f"{source.path}:{source.line_of(('rules', i, 'id'))}"
            if rule.id in seen:
                problems.append(f"{where}: rules[{i}].id: duplicate rule id {rule.id!r} (first at {seen[rule.id]})")
                continue
            seen[rule.id] = where
            if rule.kind == "watchlist" and rule.watchlist not in watchlists:
                line = source.line_of(("rules", i, "watchlist"))
                problems.append(f"{source.path}:{line}: rules[{i}].watchlist: unknown watchlist {rule.watchlist!r}")
            if known_metrics is not None and rule.scope.kinds:
                names = [c.metric for c in [*rule.conditions, *(rule.clear_when or [])]] + ([rule.metric] if rule.metric else [])
                for kind in rule.scope.kinds:
                    metrics = known_metrics.get(kind)
                    if metrics is None:
                        continue
                    for name in names:
                        if name not in metrics and name != "online":
                            line = source.line_of(("rules", i))
                            problems.append(f"{source.path}:{line}: rules[{i}]: metric {name!r} is not reported by kind {kind!r}")
            if rule.enabled:
                rules.append(rule)
        maintenance.extend(content.maintenance)
    problems += _root_cause_problems(located)
    if problems:
        raise ConfigError("\n".join(problems))
    return RuleSet(rules=rules, maintenance=maintenance, watchlists=watchlists, files=files, mtimes=mtimes)


def _root_cause_problems(located: list[tuple[LocatedYaml, RuleFile]]) -> list[str]:
    """`root_cause_of` across files: every kind named is raised by some rule (a typo would
    silently group nothing), and a root cause is not itself a symptom (one level, no cycles)."""
    known: set[str] = set()
    symptoms: dict[str, str] = {}  # alarm kind → id of an enabled rule naming it as a symptom
    for _source, content in located:
        for rule in content.rules:
            known |= rule.alarm_kinds()
            if rule.enabled and rule.root_cause_of is not None:
                for kind in rule.root_cause_of.kinds:
                    symptoms.setdefault(kind, rule.id)
    problems: list[str] = []
    for source, content in located:
        for i, rule in enumerate(content.rules):
            if rule.root_cause_of is None or not rule.enabled:
                continue
            where = f"{source.path}:{source.line_of(('rules', i, 'root_cause_of', 'kinds'))}: rules[{i}].root_cause_of"
            unknown = [k for k in rule.root_cause_of.kinds if k not in known]
            if unknown:
                problems.append(f"{where}.kinds: no rule raises alarm kind {', '.join(map(repr, unknown))}")
            for kind in sorted(rule.alarm_kinds() & symptoms.keys()):
                problems.append(f"{where}: rule {rule.id!r} raises {kind!r}, which rule {symptoms[kind]!r} names as a"
                                " symptom; a root cause cannot itself be a symptom")
    return problems
