"""Helpers for rule tests: a rule set from YAML text and the demo site's devices."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import numpy as np

from hub.registry import load_registry
from rules.devices import DeviceMeta, device_metas
from rules.engine import Engine, Rows
from rules.model import load_rules
from tests.support import ROOT

DEMO = ROOT / "examples" / "sites" / "demo.yaml"


def demo_metas() -> tuple[dict[int, DeviceMeta], dict[str, int]]:
    registry = load_registry(DEMO)
    ids = {key: i + 1 for i, key in enumerate(sorted(registry.devices))}
    return device_metas(registry, ids), {k[1]: v for k, v in ids.items()}


def write_rules(tmp_path: Path, text: str, name: str = "rules.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def engine_for(tmp_path: Path, text: str) -> tuple[Engine, dict[str, int]]:
    metas, ids = demo_metas()
    return Engine(load_rules(write_rules(tmp_path, text)), metas), ids


def rows(engine: Engine, items: list[tuple[float, int, str, Any]]) -> Rows:
    """(t, device id, metric, value) with value a number, bool or enum label."""
    ts, dev, met, val, txt = [], [], [], [], []
    for t, d, m, v in items:
        ts.append(float(t))
        dev.append(d)
        met.append(engine.metric_ix.get(m, engine.metric_ix.get("_any", -1)))
        if isinstance(v, str):
            val.append(np.nan)
            txt.append(v)
        else:
            val.append(float(v))
            txt.append(None)
    return Rows(np.array(ts), np.array(dev, np.int64), np.array(met, np.int64), np.array(val), np.array(txt, dtype=object))
