"""The few panel shapes meterflow's dashboards use, built with grafana-foundation-sdk.

Every query goes to the dashboard's ``datasource`` variable (any Prometheus), and rates use
Grafana's ``$__rate_interval``, so the dashboards work at any scrape interval.
"""

from __future__ import annotations

import itertools
import json
from dataclasses import dataclass
from typing import Literal

from grafana_foundation_sdk.builders import common as common_builders
from grafana_foundation_sdk.builders import dashboard as dashboard_builders
from grafana_foundation_sdk.builders import heatmap, prometheus, timeseries
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import common
from grafana_foundation_sdk.models import dashboard as dashboard_models
from grafana_foundation_sdk.models import heatmap as heatmap_models
from grafana_foundation_sdk.models import prometheus as prometheus_models

RATE = "$__rate_interval"
DATASOURCE = dashboard_models.DataSourceRef(type_val="prometheus", uid="${datasource}")
_WIDTH = 12  # two panels a row (the grid is 24 wide)
_HEIGHT = 8


@dataclass(frozen=True, slots=True)
class Query:
    expr: str
    legend: str


@dataclass(frozen=True, slots=True)
class Chart:
    """A time series panel (or, for a histogram's buckets, a heatmap) of ``queries``."""

    title: str
    description: str
    unit: str
    queries: tuple[Query, ...]
    kind: Literal["timeseries", "heatmap"] = "timeseries"


def chart(title: str, description: str, unit: str, *queries: Query) -> Chart:
    return Chart(title, description, unit, queries)


def rate(metric: str, by: str = "", where: str = "") -> str:
    """Per-second rate of a counter, summed ``by`` the given labels."""
    grouping = f" by ({by})" if by else ""
    selector = f"{metric}{{{where}}}" if where else metric
    return f"sum{grouping} (rate({selector}[{RATE}]))"


def increase(metric: str, by: str = "") -> str:
    """Increase of a counter per ``$__rate_interval``, summed ``by`` the given labels."""
    grouping = f" by ({by})" if by else ""
    return f"sum{grouping} (increase({metric}[{RATE}]))"


def quantile(q: float, histogram: str, by: str = "") -> str:
    """The ``q`` quantile of ``histogram`` (its base name) over ``$__rate_interval``."""
    labels = f"le, {by}" if by else "le"
    return f"histogram_quantile({q}, sum by ({labels}) (rate({histogram}_bucket[{RATE}])))"


def p50_p99(histogram: str, what: str = "") -> tuple[Query, Query]:
    prefix = f"{what} " if what else ""
    return (
        Query(quantile(0.5, histogram), f"{prefix}p50"),
        Query(quantile(0.99, histogram), f"{prefix}p99"),
    )


def heatmap_of(title: str, description: str, histogram: str) -> Chart:
    """A histogram's buckets over time: how many observations fell in each."""
    buckets = Query(f"sum by (le) (increase({histogram}_bucket[{RATE}]))", "{{le}}")
    return Chart(title, description, "s", (buckets,), kind="heatmap")


def _target(query: Query, ref_id: str, *, buckets: bool) -> prometheus.Dataquery:
    target = (
        prometheus.Dataquery()
        .expr(query.expr)
        .legend_format(query.legend)
        .ref_id(ref_id)
        .range()
        .datasource(DATASOURCE)
    )
    if buckets:
        target = target.format(prometheus_models.PromQueryFormat.HEATMAP)
    return target


def _panel(spec: Chart, panel_id: int) -> timeseries.Panel | heatmap.Panel:
    panel: timeseries.Panel | heatmap.Panel
    if spec.kind == "heatmap":
        panel = (
            heatmap.Panel()
            .calculate(False)
            .y_axis(heatmap.YAxisConfig().unit(spec.unit))
            .color(
                heatmap.HeatmapColorOptions()
                .mode(heatmap_models.HeatmapColorMode.SCHEME)
                .scheme("Oranges")
                .scale(heatmap_models.HeatmapColorScale.EXPONENTIAL)
                .exponent(0.5)
                .steps(64)
                .fill("dark-orange")
            )
        )
    else:
        legend = (
            common_builders.VizLegendOptions()
            .display_mode(common.LegendDisplayMode.LIST)
            .placement(common.LegendPlacement.BOTTOM)
            .show_legend(True)
        )
        panel = timeseries.Panel().unit(spec.unit).legend(legend).fill_opacity(10)
    panel = (
        panel.id(panel_id)
        .title(spec.title)
        .description(spec.description)
        .datasource(DATASOURCE)
        .span(_WIDTH)
        .height(_HEIGHT)
    )
    for ref, query in zip("ABCDEFGH", spec.queries, strict=False):
        panel = panel.with_target(_target(query, ref, buckets=spec.kind == "heatmap"))
    return panel


def dashboard(
    uid: str, title: str, description: str, sections: dict[str, list[Chart]]
) -> dashboard_builders.Dashboard:
    """A dashboard of rows (``sections``, in order), each of charts two abreast; panels and
    rows are numbered in order from 1."""
    built = (
        dashboard_builders.Dashboard(title)
        .uid(uid)
        .description(description)
        .tags(["meterflow"])
        .timezone("utc")
        .time("now-1h", "now")
        .refresh("30s")
        .editable()
        .tooltip(dashboard_models.DashboardCursorSync.CROSSHAIR)
        .with_variable(
            dashboard_builders.DatasourceVariable("datasource")
            .label("Prometheus")
            .type("prometheus")
        )
    )
    ids = itertools.count(1)
    for section, charts in sections.items():
        built = built.with_row(dashboard_builders.Row(section).id(next(ids)))
        for spec in charts:
            if len(spec.queries) > 8:
                raise ValueError(f"{spec.title}: at most 8 queries a panel")
            built = built.with_panel(_panel(spec, next(ids)))
    return built


def render(built: dashboard_builders.Dashboard) -> str:
    """The dashboard's JSON as committed: keys sorted, two-space indent, a final newline."""
    return json.dumps(built.build(), cls=JSONEncoder, sort_keys=True, indent=2) + "\n"
