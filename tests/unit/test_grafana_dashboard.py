"""The Grafana dashboard in deploy/ queries only metrics Switchyard exports."""

from __future__ import annotations

import json
import re
from pathlib import Path

from prometheus_client import REGISTRY

import api.http_metrics  # noqa: F401  (registers the HTTP families)
import api.queue_gauges  # noqa: F401  (defines switchyard_workers_alive)

DASHBOARD = Path(__file__).parents[2] / "deploy" / "grafana" / "switchyard.json"
_SUFFIXES = ("_bucket", "_count", "_sum", "_total")


def _exported() -> set[str]:
    names: set[str] = set()
    for collector in list(REGISTRY._collector_to_names):  # noqa: SLF001
        for family in collector.collect():
            names.add(family.name)
            names.update(sample.name for sample in family.samples)
        names.update(REGISTRY._collector_to_names[collector])  # noqa: SLF001
    return names


def test_every_metric_the_dashboard_queries_is_exported() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = [target["expr"] for panel in dashboard["panels"]
             for target in panel.get("targets", [])]
    queried = {name for expr in exprs for name in re.findall(r"switchyard_[a-z_]+", expr)}
    assert len(queried) >= 20
    exported = _exported()
    missing = {name for name in queried
               if name not in exported and name.removesuffix("_total") not in exported
               and not any(name.removesuffix(s) in exported for s in _SUFFIXES)}
    assert not missing


def test_panels_do_not_overlap_and_ids_are_unique() -> None:
    panels = json.loads(DASHBOARD.read_text())["panels"]
    assert len({panel["id"] for panel in panels}) == len(panels)
    cells: set[tuple[int, int]] = set()
    for panel in panels:
        grid = panel["gridPos"]
        for x in range(grid["x"], grid["x"] + grid["w"]):
            for y in range(grid["y"], grid["y"] + grid["h"]):
                assert (x, y) not in cells, panel["title"]
                cells.add((x, y))
