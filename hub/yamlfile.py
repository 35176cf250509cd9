"""YAML loading that remembers where every value came from.

Pydantic reports errors as a location tuple such as ``("sites", 0, "devices", 3, "model")``;
we keep a map from those tuples to source lines so a person is told *file:line: field*.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from hub.errors import ConfigError

Loc = tuple[str | int, ...]


@dataclass(frozen=True)
class LocatedYaml:
    """Parsed YAML data plus the 1-based line of every mapping key and sequence item."""

    path: Path
    data: Any
    lines: dict[Loc, int] = field(default_factory=dict)

    def line_of(self, loc: Loc) -> int:
        """Line of the deepest known prefix of `loc` (an error may point at a missing key)."""
        for end in range(len(loc), -1, -1):
            line = self.lines.get(tuple(loc[:end]))
            if line is not None:
                return line
        return 1


def _walk(node: yaml.Node, loc: Loc, lines: dict[Loc, int]) -> None:
    lines.setdefault(loc, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            key = key_node.value
            child = (*loc, key)
            lines[child] = key_node.start_mark.line + 1
            _walk(value_node, child, lines)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            child = (*loc, i)
            lines[child] = item.start_mark.line + 1
            _walk(item, child, lines)


def load_yaml(path: Path) -> LocatedYaml:
    """Parse one YAML file; syntax errors become `ConfigError` with the file and line."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror or exc}") from exc
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else 1
        raise ConfigError(f"{path}:{line}: invalid YAML: {exc.problem or exc}") from exc
    lines: dict[Loc, int] = {}
    if node is not None:
        _walk(node, (), lines)
    return LocatedYaml(path=path, data=data, lines=lines)


def format_loc(loc: Iterable[str | int]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out or "(top level)"


def validation_error(
    exc: ValidationError, source: LocatedYaml, *, prefix: Loc = (), loc_map: Any = None
) -> ConfigError:
    """Turn a pydantic error into one `ConfigError` listing every problem as file:line: field.

    `prefix` is where the validated object sits inside the file; `loc_map` may translate a
    model location into a file location when the model was built from several files.
    """
    problems = []
    for err in exc.errors(include_url=False):
        loc: Loc = (*prefix, *(p for p in err["loc"] if not isinstance(p, str) or "[" not in p))
        if loc_map is not None:
            loc = loc_map(loc)
        line = source.line_of(loc)
        problems.append(f"{source.path}:{line}: {format_loc(loc)}: {err['msg']}")
    return ConfigError("\n".join(problems))
