"""The experiment's report: Markdown, a self-contained HTML page and the figures as PNG.

Both documents are rendered from one list of blocks (headings, text, tables, figures), so
they say the same thing. The HTML embeds every figure as a base64 PNG (one file to mail or
attach to a CI run); the Markdown links the PNG files written beside it. ``summary.json``
holds every cell's figures for scripts.

Figures: success rate vs shift magnitude per swept term (Wilson 95 % intervals), policies
side by side per profile, final-error and time-to-success distributions, per-stage latency
histograms of the closed-loop episodes, and adaptation traces (the sag estimator's
parameters and a linear read-out of the policy's latent against the true dynamics).
"""

from __future__ import annotations

import base64
import html
import io
import json
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from visuomotor_core.estimate_metrics import (
    CONFIDENT,
    GOAL_MEDIAN_M,
    GOAL_P95_M,
    HAND_DISTANCE_BINS_M,
    bin_name,
    format_band,
    goal_met,
    samples_by_hand_distance,
)
from visuomotor_models.experiment.config import MODES, ExperimentConfig
from visuomotor_models.experiment.plan import Plan
from visuomotor_models.experiment.stats import CellSummary, summarize

STAGES = (
    ("encoder_inference", "encoder inference", "ms wall"),
    ("camera_to_encoder_features", "camera → encoder features", "ms wall"),
    ("policy_inference", "policy inference", "ms wall"),
    ("camera_to_policy_targets", "camera → policy targets", "ms wall"),
    ("camera_to_joint_command_sim", "camera → joint command", "ms sim time"),
)
#: Traced steps before this time are left out of the latent read-out fit (s): the history
#: window still holds the reset state.
READOUT_AFTER_S = 1.0


@dataclass
class RunInfo:
    """What this invocation did (for the throughput line)."""

    executor: str = ""
    workers: int = 0
    episodes_run: int = 0
    wall_s: float = 0.0
    startup_s: float = 0.0
    command: str = ""
    nodes: Counter = field(default_factory=Counter)


# ------------------------------------------------------------------ blocks
@dataclass
class Heading:
    text: str
    level: int = 2


@dataclass
class Text:
    text: str


@dataclass
class Table:
    header: list[str]
    rows: list[list[str]]


@dataclass
class Figure:
    name: str
    caption: str
    png: bytes


def _render_markdown(blocks: list, figure_dir: str) -> str:
    out = []
    for b in blocks:
        if isinstance(b, Heading):
            out.append(f"{'#' * b.level} {b.text}\n")
        elif isinstance(b, Text):
            out.append(b.text + "\n")
        elif isinstance(b, Table):
            out.append("| " + " | ".join(b.header) + " |")
            out.append("| " + " | ".join("---" for _ in b.header) + " |")
            out += ["| " + " | ".join(row) + " |" for row in b.rows]
            out.append("")
        elif isinstance(b, Figure):
            out.append(f"![{b.caption}]({figure_dir}/{b.name}.png)\n\n*{b.caption}*\n")
    return "\n".join(out)


def _inline_markdown(text: str) -> str:
    """Escape for HTML, keeping `code` and **bold** of the Markdown text."""
    parts = html.escape(text).split("`")
    text = "".join(f"<code>{p}</code>" if i % 2 else p for i, p in enumerate(parts))
    parts = text.split("**")
    return "".join(f"<b>{p}</b>" if i % 2 else p for i, p in enumerate(parts))


def _render_html(blocks: list, title: str) -> str:
    body = []
    for b in blocks:
        if isinstance(b, Heading):
            body.append(f"<h{b.level}>{html.escape(b.text)}</h{b.level}>")
        elif isinstance(b, Text):
            body.append(f"<p>{_inline_markdown(b.text)}</p>")
        elif isinstance(b, Table):
            head = "".join(f"<th>{html.escape(h)}</th>" for h in b.header)
            rows = "".join("<tr>" + "".join(f"<td>{_inline_markdown(c)}</td>" for c in row)
                           + "</tr>" for row in b.rows)
            body.append(f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>")
        elif isinstance(b, Figure):
            data = base64.b64encode(b.png).decode()
            body.append(f'<figure><img alt="{html.escape(b.caption)}" '
                        f'src="data:image/png;base64,{data}"><figcaption>'
                        f"{html.escape(b.caption)}</figcaption></figure>")
    style = ("body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;"
             "padding:0 1em;color:#222}table{border-collapse:collapse;margin:1em 0;"
             "font-size:90%}th,td{border:1px solid #ccc;padding:3px 8px;text-align:left}"
             "th{background:#f3f3f3}img{max-width:100%}figure{margin:1.5em 0}"
             "figcaption{color:#555;font-size:90%}code{background:#f3f3f3;padding:0 3px}")
    return (f"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{html.escape(title)}</title><style>{style}</style></head><body>\n"
            + "\n".join(body) + "\n</body></html>\n")


# ------------------------------------------------------------------ data
def finished_rows(plan: Plan, rows: dict[str, dict]) -> dict[str, dict]:
    """Rows of this plan's tasks that finished without error."""
    return {tid: rows[tid] for tid in plan.tasks
            if tid in rows and rows[tid].get("error") is None}


def cell_summaries(plan: Plan, done: dict[str, dict]
                   ) -> dict[tuple[str, str, str], CellSummary]:
    return {cell: summarize([done[t] for t in ids if t in done])
            for cell, ids in plan.cells.items()}


def _series(plan: Plan) -> list[tuple[str, str]]:
    """(policy, mode) pairs with at least one cell, in plan order."""
    seen: list[tuple[str, str]] = []
    for _, policy, mode in plan.cells:
        if (policy, mode) not in seen:
            seen.append((policy, mode))
    return seen


def _fmt(value: float, scale: float = 1.0, digits: int = 2) -> str:
    return "-" if not np.isfinite(value) else f"{value * scale:.{digits}f}"


# ------------------------------------------------------------------ figures
def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _png(fig) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    _pyplot().close(fig)
    return buffer.getvalue()


def _plain_log_ticks(ax) -> None:
    """Tick labels of a log axis as plain numbers (2, 5, 10 rather than 2x10^0)."""
    from matplotlib.ticker import FormatStrFormatter, NullFormatter

    ax.yaxis.set_major_formatter(FormatStrFormatter("%g"))
    ax.yaxis.set_minor_formatter(NullFormatter())


def _label(policy: str, mode: str, modes: set[str]) -> str:
    return policy if len(modes) == 1 else f"{policy} · {mode}"


def figure_sweeps(config: ExperimentConfig, plan: Plan, summaries) -> bytes | None:
    if not config.sweeps:
        return None
    plt = _pyplot()
    series = _series(plan)
    modes = {m for _, m in series}
    columns = min(3, len(config.sweeps))
    rows = -(-len(config.sweeps) // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(4.6 * columns, 3.5 * rows),
                             squeeze=False)
    for ax, sweep in zip(axes.flat, config.sweeps, strict=False):
        span = (max(sweep.values) - min(sweep.values)) or 1.0
        for i, (policy, mode) in enumerate(series):
            xs, ys, lo, hi = [], [], [], []
            for value in sweep.values:
                s = summaries.get((f"{sweep.name}={value:g}", policy, mode))
                if s is None or not s.episodes:
                    continue
                xs.append(value + (i - (len(series) - 1) / 2) * 0.012 * span)
                ys.append(s.rate)
                lo.append(max(0.0, s.rate - s.ci_low))
                hi.append(max(0.0, s.ci_high - s.rate))
            if xs:
                ax.errorbar(xs, ys, yerr=[lo, hi], marker="o", capsize=3, ms=4,
                            label=_label(policy, mode, modes))
        ax.set_title(sweep.name)
        ax.set_xlabel(f"{sweep.term}" + (f" ({sweep.unit})" if sweep.unit else ""))
        ax.set_ylabel("success rate")
        ax.set_ylim(-0.05, 1.05)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(config.sweeps):]:
        ax.axis("off")
    handles, labels = axes.flat[0].get_legend_handles_labels()
    if labels:
        fig.legend(handles, labels, loc="upper center", ncol=min(4, len(labels)),
                   bbox_to_anchor=(0.5, 1.0 + 0.04 / rows))
    fig.tight_layout(rect=(0, 0, 1, 0.97))
    return _png(fig)


def _profile_conditions(plan: Plan) -> list[str]:
    return [c.label for c in plan.conditions.values() if c.group == "profiles"]


def figure_policies(plan: Plan, summaries) -> bytes | None:
    conditions = _profile_conditions(plan)
    series = _series(plan)
    modes = [m for m in MODES if any(sm == m for _, sm in series)]
    if not conditions:
        return None
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(modes), figsize=(max(5.0, 1.6 * len(conditions) + 2)
                                                     * len(modes), 3.8), squeeze=False)
    for ax, mode in zip(axes[0], modes, strict=True):
        policies = [p for p, m in series if m == mode]
        width = 0.8 / max(1, len(policies))
        for i, policy in enumerate(policies):
            xs, ys, err = [], [], [[], []]
            for j, condition in enumerate(conditions):
                s = summaries.get((condition, policy, mode))
                if s is None or not s.episodes:
                    continue
                xs.append(j + (i - (len(policies) - 1) / 2) * width)
                ys.append(s.rate)
                err[0].append(max(0.0, s.rate - s.ci_low))
                err[1].append(max(0.0, s.ci_high - s.rate))
            ax.bar(xs, ys, width=width * 0.95, yerr=err, capsize=3, label=policy)
        ax.set_xticks(range(len(conditions)), conditions, rotation=20, ha="right")
        ax.set_ylim(0, 1.22)
        ax.set_yticks(np.linspace(0, 1, 6))
        ax.set_ylabel("success rate (Wilson 95 %)")
        ax.set_title(mode)
        ax.grid(axis="y", alpha=0.3)
        ax.legend(fontsize=8, loc="upper center", ncol=len(policies))
    fig.tight_layout()
    return _png(fig)


def figure_distributions(plan: Plan, done: dict[str, dict]) -> bytes | None:
    conditions = _profile_conditions(plan) or list(plan.conditions)[:12]
    series = _series(plan)
    modes = {m for _, m in series}
    if not done:
        return None
    plt = _pyplot()
    fig, axes = plt.subplots(2, 1, figsize=(max(6.0, 1.5 * len(conditions) * max(1, len(
        series)) ** 0.5 + 2), 7.0))
    width = 0.8 / max(1, len(series))
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for ax, key, scale, ylabel in ((axes[0], "final_error_m", 100.0, "final error (cm)"),
                                   (axes[1], "time_to_success_s", 1.0,
                                    "time to success (s), successful episodes")):
        for i, (policy, mode) in enumerate(series):
            data, positions = [], []
            for j, condition in enumerate(conditions):
                values = [done[t][key] * scale for t in plan.cells.get(
                    (condition, policy, mode), []) if t in done and done[t][key] is not None]
                if values:
                    data.append(values)
                    positions.append(j + (i - (len(series) - 1) / 2) * width)
            if data:
                parts = ax.boxplot(data, positions=positions, widths=width * 0.9,
                                   patch_artist=True, showfliers=True,
                                   flierprops={"markersize": 3})
                for box in parts["boxes"]:
                    box.set_facecolor(colours[i % len(colours)])
                    box.set_alpha(0.6)
                ax.plot([], [], color=colours[i % len(colours)], lw=6, alpha=0.6,
                        label=_label(policy, mode, modes))
        ax.set_xticks(range(len(conditions)), conditions, rotation=20, ha="right")
        ax.set_ylabel(ylabel)
        ax.grid(axis="y", alpha=0.3)
    axes[0].axhline(2.0, color="grey", ls=":", lw=1)
    axes[0].set_yscale("log")
    _plain_log_ticks(axes[0])
    axes[0].legend(fontsize=8, ncol=2)
    fig.tight_layout()
    return _png(fig)


def figure_latency(done: dict[str, dict]) -> bytes | None:
    closed = [r for r in done.values() if r.get("latency_samples_s")]
    if not closed:
        return None
    plt = _pyplot()
    modes = sorted({r["mode"] for r in closed})
    fig, axes = plt.subplots(1, len(STAGES), figsize=(3.4 * len(STAGES), 3.0))
    for ax, (key, title, unit) in zip(axes, STAGES, strict=True):
        for mode in modes:
            samples = np.concatenate([np.asarray(r["latency_samples_s"].get(key, []), float)
                                      for r in closed if r["mode"] == mode]) * 1e3
            samples = samples[np.isfinite(samples) & (samples > 0)]
            if samples.size:
                bins = np.logspace(np.log10(max(samples.min(), 1e-3)),
                                   np.log10(samples.max() * 1.01), 40)
                ax.hist(samples, bins=bins, alpha=0.6,
                        label=f"{mode}: p50 {np.percentile(samples, 50):.2f}, "
                              f"p99 {np.percentile(samples, 99):.2f}")
        ax.set_xscale("log")
        ax.set_title(title, fontsize=10)
        ax.set_xlabel(unit)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
    axes[0].set_ylabel("samples")
    fig.tight_layout()
    return _png(fig)


def latent_readout(traced: list[dict], ridge: float = 1e-3
                   ) -> tuple[dict[int, np.ndarray], float] | None:
    """Linear read-out ``[latent, 1] -> payload / strength``, judged on episodes it was not
    fitted on: for each traced episode a ridge fit on the steps after
    :data:`READOUT_AFTER_S` of all OTHER episodes predicts its whole trace. Returns the
    predictions by episode index and the R² of the held-out steps after
    :data:`READOUT_AFTER_S`; None without a latent or with fewer than 4 distinct dynamics."""
    if any(not row["trace"]["latent"] or not len(row["trace"]["latent"][0])
           for row in traced):
        return None
    if len({round(row["trace"]["true_sag_theta"][1], 9) for row in traced}) < 4:
        return None
    features, targets, late = [], [], []
    for row in traced:
        trace = row["trace"]
        z = np.asarray(trace["latent"], float)
        features.append(np.hstack([z, np.ones((len(z), 1))]))
        targets.append(np.full(len(z), trace["true_sag_theta"][1]))
        late.append(np.asarray(trace["t"]) >= READOUT_AFTER_S)
    predictions, held_out, truth = {}, [], []
    for i in range(len(traced)):
        x = np.vstack([f[m] for j, (f, m) in enumerate(zip(features, late, strict=True))
                       if j != i])
        y = np.concatenate([t[m] for j, (t, m) in enumerate(zip(targets, late, strict=True))
                            if j != i])
        weights = np.linalg.solve(x.T @ x + ridge * len(x) * np.eye(x.shape[1]), x.T @ y)
        predictions[i] = features[i] @ weights
        held_out.append(predictions[i][late[i]])
        truth.append(targets[i][late[i]])
    y_hat, y = np.concatenate(held_out), np.concatenate(truth)
    r2 = 1.0 - float(((y - y_hat) ** 2).sum()) / max(float(((y - y.mean()) ** 2).sum()), 1e-12)
    return predictions, r2


def figure_adaptation(done: dict[str, dict]) -> tuple[bytes, str] | None:
    traced = [r for r in done.values() if r.get("trace") and r["trace"]["t"]]
    if not traced:
        return None
    traced.sort(key=lambda r: (r["profile"], r["policy"], r["seed"]))
    plt = _pyplot()
    readout = latent_readout(traced)
    fig, grid = plt.subplots(2, 3, figsize=(16, 7.5))
    axes = grid.flat
    truths = [r["trace"]["true_sag_theta"][1] for r in traced]
    norm = plt.Normalize(min(truths), max(max(truths), min(truths) + 1e-6))
    cmap = plt.get_cmap("viridis")
    for index, row in enumerate(traced):
        trace = row["trace"]
        t = np.asarray(trace["t"])
        true = trace["true_sag_theta"]
        colour = cmap(norm(true[1]))
        if trace["sag_theta"]:
            theta = np.asarray(trace["sag_theta"])
            axes[0].plot(t, theta[:, 1], color=colour, lw=1.2)
            axes[0].axhline(true[1], color=colour, ls="--", lw=0.8)
            axes[1].plot(t, theta[:, 0], color=colour, lw=1.2)
            axes[1].axhline(true[0], color=colour, ls="--", lw=0.8)
        if trace.get("sag_offset_rad"):
            axes[2].plot(t, np.asarray(trace["sag_offset_rad"]) * 1e3, color=colour, lw=1.2)
            axes[2].plot(t, np.asarray(trace["true_sag_offset_rad"]) * 1e3, color=colour,
                         ls="--", lw=0.8)
        if readout is not None:
            axes[3].plot(t, readout[0][index], color=colour, lw=1.2)
            axes[3].axhline(true[1], color=colour, ls="--", lw=0.8)
        axes[4].plot(t, np.asarray(trace["error_m"]) * 100.0, color=colour, lw=1.0)
    axes[0].set_title("sag estimate: payload / strength (kg)")
    axes[1].set_title("sag estimate: link mass / strength − 1")
    axes[2].set_title("sag feed-forward |offset| vs the true sag (mrad)")
    axes[3].set_title("latent → payload / strength, linear read-out"
                      + (f"\n(held-out episodes, R² {readout[1]:.2f})" if readout
                         else ":\nno latent, or under 4 distinct dynamics"))
    axes[4].set_title("hand–target distance (cm)")
    axes[4].set_yscale("log")
    axes[4].axhline(2.0, color="grey", ls=":", lw=1)
    _plain_log_ticks(axes[4])
    axes[5].axis("off")
    for ax in list(axes)[:5]:
        ax.set_xlabel("time in episode (s)")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    colourbar = fig.colorbar(plt.cm.ScalarMappable(norm=norm, cmap=cmap), ax=axes[5],
                             fraction=0.5, aspect=12)
    colourbar.set_label("true payload / strength (kg)")
    policies = sorted({r["policy"] for r in traced})
    caption = (f"Adaptation over {len(traced)} state-only episodes of {', '.join(policies)}; "
               f"solid: estimate, dashed: from the true dynamics, colour: true payload / "
               f"strength. The sag estimator fits two parameters whose bases are nearly "
               f"parallel at one posture, so the split between them can be off while the "
               f"offset it adds (top right) matches the true sag. The latent read-out is a "
               f"ridge map from the 8-D latent to payload / strength fitted on the other "
               f"episodes (steps after {READOUT_AFTER_S:g} s).")
    return _png(fig), caption


# ------------------------------------------------------------------ document
#: (sample kind in the demo's report, least confidence, label) of the target-error table.
_ESTIMATES = (("estimate", 0.0, "encoder, every frame"),
              ("estimate", CONFIDENT, f"encoder, confidence >= {CONFIDENT:g}"),
              ("goal", 0.0, "goal (filtered: what the policy acts on)"))


def target_error_rows(done: dict[str, dict]) -> list[list[str]]:
    """Per (profile, policy) of the closed-loop episodes: the target estimates' error
    against the true target by hand–target distance band, pooled over the episodes
    (median / p95 cm, samples), and whether every band meets the held-out goal."""
    pooled: dict[tuple[str, str], dict[str, list]] = {}
    for r in done.values():
        for kind, samples in (r.get("target_error_samples_m") or {}).items():
            pooled.setdefault((r["profile"], r["policy"]), {}).setdefault(kind, []).extend(
                samples)
    rows = []
    for (profile, policy), kinds in sorted(pooled.items()):
        for kind, least, label in _ESTIMATES:
            bands = samples_by_hand_distance(kinds.get(kind, []), least)
            if not any(band["count"] for band in bands.values()):
                continue
            rows.append([profile, policy, label, *map(format_band, bands.values()),
                         "yes" if goal_met(bands) else "no"])
    return rows


def build_blocks(config: ExperimentConfig, plan: Plan, rows: dict[str, dict], info: RunInfo,
                 hashes: dict[str, str | None]) -> tuple[list, dict]:
    done = finished_rows(plan, rows)
    summaries = cell_summaries(plan, done)
    errors = [rows[t] for t in plan.tasks if t in rows and rows[t].get("error") is not None]
    series = _series(plan)
    blocks: list = [Heading(f"Experiment `{config.name}`", 1)]
    if config.description:
        blocks.append(Text(config.description))
    total = len(plan.tasks)
    lines = [f"Config: `{config.source}`" if config.source else "",
             f"Command: `{info.command}`" if info.command else "",
             f"Episodes: {len(done)} of {total} finished" +
             (f", {len(errors)} broke (retried on the next run)" if errors else ""),
             "Policies: " + ", ".join(f"`{p}`" + (f" (sha256 {h[:12]})" if h else
                                                  " (privileged: true target and dynamics)")
                                     for p, h in hashes.items())]
    if info.episodes_run:
        rate = info.episodes_run / max(info.wall_s, 1e-9)
        lines.append(f"This run: {info.episodes_run} episodes in {info.wall_s:.1f} s = "
                     f"**{rate:.2f} episodes/s** ({info.executor}, {info.workers} "
                     f"worker{'s' if info.workers != 1 else ''}"
                     + (f", {len(info.nodes)} nodes" if len(info.nodes) > 1 else "")
                     + (f"; {info.startup_s:.1f} s start-up before" if info.startup_s > 0.5
                        else "") + ")")
    blocks.append(Text("  \n".join(x for x in lines if x)))
    if plan.skipped:
        blocks.append(Text("Not run: " + "; ".join(plan.skipped) + "."))

    modes_present = [m for m in MODES if any(m == sm for _, sm in series)]
    profile_conditions = _profile_conditions(plan)
    summary_json: dict = {"cells": []}
    for (condition, policy, mode), s in summaries.items():
        figures = {k: (None if isinstance(v, float) and not np.isfinite(v) else v)
                   for k, v in asdict(s).items()}
        summary_json["cells"].append({"condition": condition, "policy": policy, "mode": mode,
                                      **figures})
    if profile_conditions:
        blocks.append(Heading("Success per profile"))
        blocks.append(Text("Success rate (successes/episodes) [Wilson 95 % interval, %]; "
                           "then final error median (cm) / time to success median (s, "
                           "successful episodes)."))
        for mode in modes_present:
            policies = [p for p, m in series if m == mode]
            blocks.append(Heading(mode, 3))
            blocks.append(Table(["policy", *profile_conditions], [
                [policy, *[summaries[(c, policy, mode)].success_text()
                           if (c, policy, mode) in summaries else "-"
                           for c in profile_conditions]] for policy in policies]))
            blocks.append(Table(["policy", *[f"{c}: error / time" for c in profile_conditions]],
                                [[policy, *[
                                    f"{_fmt(s.final_error_median_m, 100)} / "
                                    f"{_fmt(s.time_to_success_median_s)}"
                                    if (s := summaries.get((c, policy, mode))) and s.episodes
                                    else "-" for c in profile_conditions]]
                                 for policy in policies]))
    target_rows = target_error_rows(done)
    if target_rows:
        blocks.append(Heading("Target estimate error by hand–target distance"))
        blocks.append(Text(
            "Closed-loop episodes, every camera frame of every episode pooled: the encoder's "
            "estimate of the target position and the policy's goal (the confident estimates "
            "filtered, frozen while the hand is near) against the true target, by the grasp "
            "point's distance to the target; median / p95 in cm (samples). Goal: median <= "
            f"{GOAL_MEDIAN_M * 100:g} cm and p95 <= {GOAL_P95_M * 100:g} cm in every band."))
        blocks.append(Table(["profile", "policy", "estimate",
                             *[f"hand {bin_name(low, high)}"
                               for low, high in HAND_DISTANCE_BINS_M], "goal met"],
                            target_rows))
    if config.sweeps:
        blocks.append(Heading("Sweeps of one term of the shift"))
        sweep_series = [(p, m) for p, m in series if any(
            (f"{w.name}={v:g}", p, m) in summaries for w in config.sweeps for v in w.values)]
        blocks.append(Text("Success rate (%) at each value, in the order of the values "
                           "column; per-value tables with counts and intervals follow."))
        compact = []
        for sweep in config.sweeps:
            unit = f" {sweep.unit}" if sweep.unit else ""
            cells = []
            for p, m in sweep_series:
                rates = [summaries.get((f"{sweep.name}={v:g}", p, m)) for v in sweep.values]
                cells.append(", ".join(f"{100 * r.rate:.0f}" if r and r.episodes else "-"
                                       for r in rates))
            episodes = {summaries[(f"{sweep.name}={v:g}", p, m)].episodes
                        for v in sweep.values for p, m in sweep_series
                        if (f"{sweep.name}={v:g}", p, m) in summaries}
            compact.append([f"{sweep.name} (`{sweep.term}`)" if sweep.label else
                            f"`{sweep.term}`",
                            ", ".join(f"{v:g}" for v in sweep.values) + unit,
                            "/".join(str(n) for n in sorted(episodes)), *cells])
        blocks.append(Table(["term", "values", "episodes per value",
                             *[_label(p, m, set(modes_present)) for p, m in sweep_series]],
                            compact))
        blocks.append(Text("Success rate per value (the other terms from the sweep's base "
                           "profile), [Wilson 95 % interval, %]."))
        for sweep in config.sweeps:
            sweep_series = [(p, m) for p, m in series if any(
                (f"{sweep.name}={v:g}", p, m) in summaries for v in sweep.values)]
            header = [f"{sweep.name} ({sweep.unit})" if sweep.unit else sweep.name,
                      *[_label(p, m, set(modes_present)) for p, m in sweep_series]]
            table_rows = []
            for value in sweep.values:
                label = f"{sweep.name}={value:g}"
                table_rows.append([f"{value:g}", *[
                    summaries[(label, p, m)].success_text() if (label, p, m) in summaries
                    else "-" for p, m in sweep_series]])
            blocks.append(Heading(f"{sweep.name} (`{sweep.term}` on `{sweep.base}`)", 3))
            blocks.append(Table(header, table_rows))

    figures = []
    sweeps_png = figure_sweeps(config, plan, summaries)
    if sweeps_png:
        figures.append(Figure("success_vs_shift", "Success rate vs shift magnitude, one panel "
                              "per swept term; bars: Wilson 95 % intervals.", sweeps_png))
    policies_png = figure_policies(plan, summaries)
    if policies_png:
        figures.append(Figure("policies_side_by_side", "Policies side by side per profile "
                              "(Wilson 95 % intervals).", policies_png))
    distributions_png = figure_distributions(plan, done)
    if distributions_png:
        figures.append(Figure("distributions", "Final error (log scale; dotted: the 2 cm "
                              "success radius) and time to success per condition.",
                              distributions_png))
    latency_png = figure_latency(done)
    if latency_png:
        figures.append(Figure("latency", "Per-stage latency of the closed-loop episodes "
                              "(all samples; legend: p50 / p99 in ms).", latency_png))
    adaptation = figure_adaptation(done)
    if adaptation:
        figures.append(Figure("adaptation", adaptation[1], adaptation[0]))
    if figures:
        blocks.append(Heading("Figures"))
        blocks += figures

    closed_failures = [r for r in done.values() if r["mode"] != "state_only"
                       and not r["success"]]
    multi_node = len({r.get("node_ip") for r in done.values()}) > 1
    if any(m != "state_only" for m in modes_present):
        blocks.append(Heading("Failed closed-loop episodes"))
        if closed_failures:
            blocks.append(Text("Each one's recording is a rosbag2 directory (MCAP; `ros2 bag "
                               "info DIR`, or any MCAP viewer) on the node that ran it."))
            blocks.append(Table(["condition", "policy", "mode", "seed", "final error (cm)",
                                 "recording"], [
                [r["profile"], r["policy"], r["mode"], str(r["seed"]),
                 _fmt(r["final_error_m"], 100),
                 (f"`{r['recording']}`" + (f" on {r['node_ip']}" if multi_node else ""))
                 if r.get("recording") else "not recorded"]
                for r in sorted(closed_failures, key=lambda r: (r["profile"], r["policy"],
                                                                r["mode"], r["seed"]))]))
        else:
            blocks.append(Text("None."))
    if errors:
        blocks.append(Heading("Episodes that broke"))
        blocks.append(Table(["condition", "policy", "mode", "seed", "error"], [
            [r["profile"], r["policy"], r["mode"], str(r["seed"]),
             r["error"].replace("\n", " ").replace("|", "/")[:300]] for r in errors]))
    return blocks, summary_json


def write_report(run_dir: Path, config: ExperimentConfig, plan: Plan, rows: dict[str, dict],
                 info: RunInfo, hashes: dict[str, str | None]) -> dict[str, Path]:
    """Write report.md, report.html, figures/*.png and summary.json into ``run_dir``."""
    blocks, summary = build_blocks(config, plan, rows, info, hashes)
    figure_dir = run_dir / "figures"
    figure_dir.mkdir(parents=True, exist_ok=True)
    for block in blocks:
        if isinstance(block, Figure):
            (figure_dir / f"{block.name}.png").write_bytes(block.png)
    paths = {"markdown": run_dir / "report.md", "html": run_dir / "report.html",
             "summary": run_dir / "summary.json"}
    paths["markdown"].write_text(_render_markdown(blocks, "figures"))
    paths["html"].write_text(_render_html(blocks, f"Experiment {config.name}"))
    paths["summary"].write_text(json.dumps(summary, indent=1) + "\n")
    return paths


def markdown_tables(run_dir: Path) -> str:
    """The tables of a written report (for pasting into the README)."""
    text = (run_dir / "report.md").read_text()
    return "\n".join(line for line in text.splitlines() if line.startswith(("|", "#")))
