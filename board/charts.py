"""Events -> plotly figures: one run's curves as they stream in, and several runs' losses on one chart.

`Curves` only accumulates numbers from typed events; figures are built from it on demand, so a
reload redraws a run from its events.jsonl alone. Titles and axes come in the page's language.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from engine.events import Evaluation, LogStep, RunStarted

from .i18n import t

# chart name -> (title key, y-axis key): the live charts of the Train tab; the last two only for DPO
METRICS = {
    "loss": ("ui.chart.loss", "ui.chart.loss_axis"),
    "lr": ("ui.chart.lr", "ui.chart.lr_axis"),
    "grad_norm": ("ui.chart.grad_norm", "ui.chart.grad_norm_axis"),
    "speed": ("ui.chart.speed", "ui.chart.speed_axis"),
    "memory": ("ui.chart.memory", "ui.chart.memory_axis"),
    "rewards": ("ui.chart.rewards", "ui.chart.rewards_axis"),
    "accuracy": ("ui.chart.accuracy", "ui.chart.accuracy_axis"),
}
PREFERENCE = ("rewards", "accuracy")  # charts of a preference run's own metrics (trl's rewards/*)
# the rewards chart's lines: trl's metric, its name, its colour, its dash
REWARD_LINES = (
    ("rewards/chosen", "ui.chart.chosen", "#16a34a", None),
    ("rewards/rejected", "ui.chart.rejected", "#dc2626", None),
    ("rewards/margins", "ui.chart.margin", "#4f46e5", None),
)
COLORS = ["#4f46e5", "#0891b2", "#db2777", "#65a30d", "#ea580c", "#7c3aed", "#0d9488", "#ca8a04"]


@dataclass
class Series:
    x: list[int] = field(default_factory=list)
    y: list[float] = field(default_factory=list)

    def add(self, step: int, value: float | None) -> None:
        if value is None:
            return
        while self.x and self.x[-1] >= step:  # a resume from an earlier checkpoint redoes steps
            self.x.pop()
            self.y.pop()
        self.x.append(step)
        self.y.append(value)


@dataclass
class Curves:
    loss: Series = field(default_factory=Series)
    eval_loss: Series = field(default_factory=Series)
    lr: Series = field(default_factory=Series)
    grad_norm: Series = field(default_factory=Series)
    speed: Series = field(default_factory=Series)
    memory: Series = field(default_factory=Series)
    memory_unit_gpu: bool = False
    stage: str = ""
    # a preference run's trl metrics (rewards/chosen, rewards/accuracies, ...), and their validation values
    rewards: dict[str, Series] = field(default_factory=dict)
    eval_rewards: dict[str, Series] = field(default_factory=dict)

    @property
    def preference(self) -> bool:
        """A DPO run: its rewards say more than its loss (which falls however the pairs are ranked)."""
        return self.stage == "dpo" or bool(self.rewards)

    def add(self, events: Iterable[Any]) -> bool:
        """Take in new events; True if any point was added."""
        changed = False
        for ev in events:
            if isinstance(ev, RunStarted):
                self.memory_unit_gpu = ev.device != "cpu"
                self.stage = ev.stage
            elif isinstance(ev, LogStep):
                self.loss.add(ev.step, ev.loss)
                self.lr.add(ev.step, ev.learning_rate)
                self.grad_norm.add(ev.step, ev.grad_norm)
                self.speed.add(ev.step, ev.tokens_per_second)
                self.memory.add(ev.step, ev.memory_gb)
                _add_rewards(self.rewards, ev.step, ev.metrics)
                changed = True
            elif isinstance(ev, Evaluation):
                if "loss" in ev.metrics:
                    self.eval_loss.add(ev.step, ev.metrics["loss"])
                changed = _add_rewards(self.eval_rewards, ev.step, ev.metrics) or "loss" in ev.metrics or changed
        return changed


def _add_rewards(into: dict[str, Series], step: int, metrics: dict[str, float]) -> bool:
    found = False
    for key, value in metrics.items():
        if key.startswith("rewards/"):
            into.setdefault(key, Series()).add(step, value)
            found = True
    return found


@lru_cache(maxsize=1)
def _template() -> dict[str, Any]:
    """plotly_white, resolved once: the browser's plotly.js knows templates only as their contents."""
    import plotly.io as pio

    return pio.templates["plotly_white"].to_plotly_json()


def _figure(traces: list[dict[str, Any]], layout: dict[str, Any]):
    """A figure from plain dicts that are ours and valid, without plotly's per-property checks (about 25 ms a
    figure, and the Train tab redraws its charts every second while a run streams)."""
    import plotly.graph_objects as go

    return go.Figure(data=traces, layout=layout, _validate=False)


def _layout(title: str, y_title: str, lang: str, log_y: bool = False) -> dict[str, Any]:
    return dict(
        title=dict(text=title, font=dict(size=14), x=0.02, xanchor="left"),
        height=260,
        margin=dict(l=56, r=16, t=40, b=40),
        template=_template(),
        xaxis=dict(title=dict(text=t("ui.chart.step", lang)), rangemode="tozero", gridcolor="#eef0f4"),
        yaxis=dict(
            title=dict(text=y_title),
            type="log" if log_y else "linear",
            gridcolor="#eef0f4",
            exponentformat="e" if log_y else "none",
        ),
        legend=dict(orientation="h", yanchor="bottom", y=1.0, xanchor="right", x=1.0, font=dict(size=11)),
        font=dict(family="ui-sans-serif, system-ui, sans-serif", size=12, color="#374151"),
        paper_bgcolor="rgba(0,0,0,0)",
        plot_bgcolor="rgba(0,0,0,0)",
        uirevision="keep",
    )


def _line(series: Series, name: str, color: str, dash: str | None = None) -> dict[str, Any]:
    mode = "lines+markers" if len(series.x) < 40 else "lines"
    return dict(
        type="scatter",
        x=series.x,
        y=series.y,
        name=name,
        mode=mode,
        line=dict(color=color, width=2, **({"dash": dash} if dash else {})),
        marker=dict(size=5),
    )


def figure(curves: Curves, metric: str, lang: str, waiting: bool = True):
    """One live chart (`metric` is a key of METRICS); `waiting`: the run may still log points."""
    title_key, axis_key = METRICS[metric]
    axis_key = "ui.chart.memory_axis_cpu" if metric == "memory" and not curves.memory_unit_gpu else axis_key
    traces = []
    legend = metric == "loss" and bool(curves.eval_loss.x)
    if metric == "loss":
        traces.append(_line(curves.loss, t("ui.chart.train_loss", lang), COLORS[0]))
        if curves.eval_loss.x:
            traces.append(_line(curves.eval_loss, t("ui.chart.eval_loss", lang), COLORS[2], "dot"))
    elif metric == "rewards":
        told = False  # validation dotted, as on the other charts; one legend entry says so, each named on hover
        for key, name, color, dash in REWARD_LINES:
            traces.append(_line(curves.rewards.get(key, Series()), t(name, lang), color, dash))
            if key in curves.eval_rewards:
                hover = f"{t(name, lang)} · {t('ui.chart.eval', lang)}"
                line = _line(curves.eval_rewards[key], t("ui.chart.eval", lang) if not told else hover, color, "dot")
                traces.append(dict(line, showlegend=not told, hovertemplate=f"{hover}: %{{y:.3g}}<extra></extra>"))
                told = True
        legend = True
    elif metric == "accuracy":
        key = "rewards/accuracies"
        traces.append(_line(curves.rewards.get(key, Series()), t("ui.chart.train", lang), COLORS[1]))
        if key in curves.eval_rewards:
            traces.append(_line(curves.eval_rewards[key], t("ui.chart.eval", lang), COLORS[2], "dot"))
        legend = key in curves.eval_rewards
    else:
        traces.append(
            _line(
                getattr(curves, metric),
                t(title_key, lang),
                COLORS[{"lr": 1, "grad_norm": 2, "speed": 3, "memory": 4}[metric]],
            )
        )
    fig = _figure(traces, _layout(t(title_key, lang), t(axis_key, lang), lang))
    fig.update_layout(showlegend=legend)
    if metric == "accuracy":
        fig.update_yaxes(range=[-0.02, 1.02], tickformat=".0%")  # a share of pairs: the whole scale, always
    if 0 < max((tr["x"][-1] for tr in traces if tr["x"]), default=0) <= 10:
        fig.update_xaxes(dtick=1)  # steps are whole numbers: no 0.5 ticks on a short run
    if not any(tr["x"] for tr in traces):
        _empty(fig, t("ui.chart.waiting" if waiting else "ui.chart.no_points", lang))
    return fig


def _empty(fig, text: str) -> None:
    """No points yet: a quiet note instead of made-up axes."""
    fig.update_layout(xaxis=dict(visible=False), yaxis=dict(visible=False))
    fig.add_annotation(
        text=text, showarrow=False, xref="paper", yref="paper", x=0.5, y=0.5, font=dict(color="#9ca3af", size=13)
    )


def compare_figure(runs: dict[str, Curves], lang: str, eval_too: bool = True):
    """The training (and eval) loss of several runs on one chart, one colour per run."""
    traces = []
    for i, (name, curves) in enumerate(runs.items()):
        color = COLORS[i % len(COLORS)]
        traces.append(_line(curves.loss, name, color))
        if eval_too and curves.eval_loss.x:
            traces.append(_line(curves.eval_loss, f"{name} · {t('ui.chart.eval', lang)}", color, "dot"))
    fig = _figure(traces, _layout(t("ui.chart.compare", lang), t("ui.chart.loss_axis", lang), lang))
    fig.update_layout(height=360, showlegend=True)
    if not traces:
        _empty(fig, t("ui.chart.pick_runs", lang))
    return fig
