"""The paper's figure 3 from a run's metrics: training health over steps, one run or several.

    python -m recipe_tapo.view.panels [LABEL=]METRICS [[LABEL=]METRICS ...] -o fig3.png

Each METRICS is a run folder (its `metrics.jsonl`), verl's file-logger JSONL or a console log
(`recipe_tapo.view.metrics`); several are overlaid, labelled LABEL (default: the run folder's name,
or the file's name). An argument that is an existing path is a path even if it holds "=".
Example: `python -m recipe_tapo.view.panels grpo=runs/grpo_s0 tapo=runs/tapo_s0 -o fig3.png`.

Nine panels (a 3 x 3 grid, `FIGURE_SIZE` inches at `DPI`): figure 3's six, then three of the
synthesis; a run without a panel's metrics (a GRPO run has no `tapo/` ones) has no curve there. When a
run logs OPSD's `opsd/kl_estimate`, a tenth panel shows it, on a fourth row (the figure grows by a
third of its height).
1. OTS weight mean, `tapo/ots_weight_mean/inserted` (solid) and `/prefix` (dashed);
2. policy-gradient loss, `actor/pg_loss`;
3. training accuracy: a training metric named `.../acc/mean` when the run logs one, else
   `critic/score/mean` (verl 0.9.1 logs no training accuracy of its own; the score is the reward,
   which is the accuracy for a 0/1 reward);
4. gradient norm, `actor/grad_norm`;
5. response length, `response_length/mean`;
6. KL: the first of `KL_KEYS` that any run logs, for every run: `actor/kl_loss` (KL to the
   reference policy, logged when the actor uses a KL loss), else `actor/ppo_kl` (the approximate KL
   between the rollout-time and the updated policy, which verl's PPO loss always logs), else
   `rollout_corr/kl` (rollout engine vs. trainer);
7. constructed rows inserted, `tapo/constructed_rows`;
8. synthesis parse rate, `tapo/parse_rate`;
9. constructed-row accuracy, `tapo/constructed_acc`;
10. (OPSD runs) the estimated KL from the student to its privileged-context teacher, `opsd/kl_estimate`
    (nats per sampled response token).
The trainer logs 0 for a rate or mean over nothing (no synthesis answered, no construction); such
steps are left out of those panels (`_MEASURED_AT`) rather than drawn as zeros. A run with
`full_reconstruction` keeps no prefix, so its prefix OTS curve sits at 0.

From Python (e.g. the toy report): `plot_training_panels({label: {step: {metric: value}}}, path)`.
"""

from __future__ import annotations

import argparse
import io
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import IO

from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator
from PIL import Image

from recipe_tapo.view.metrics import METRICS_FILE, read_run_metrics

FIGURE_SIZE = (15.0, 11.0)  # inches
DPI = 100
PNG_COLOURS = 128
OTS_INSERTED = "tapo/ots_weight_mean/inserted"
OTS_PREFIX = "tapo/ots_weight_mean/prefix"
SCORE_KEY = "critic/score/mean"
KL_KEYS = ("actor/kl_loss", "actor/ppo_kl", "rollout_corr/kl")
OPSD_KL = "opsd/kl_estimate"
PANELS_PER_ROW = 3

Metrics = Mapping[str, float]
Runs = Mapping[str, Mapping[int, Metrics]]


def _has_constructions(metrics: Metrics) -> bool:
    return metrics.get("tapo/constructed_rows", 0) > 0


# Steps at which the trainer's 0-for-nothing metrics measured something.
_MEASURED_AT: dict[str, Callable[[Metrics], bool]] = {
    "tapo/parse_rate": lambda metrics: metrics.get("tapo/synthesis_answered", 0) > 0,
    # over the spliced constructions: the inserted ones and those dropped for scoring wrong
    "tapo/constructed_acc": lambda metrics: (metrics.get("tapo/constructed_rows", 0)
                                             + metrics.get("tapo/fail/dropped_incorrect", 0)) > 0,
    OTS_INSERTED: _has_constructions,
    OTS_PREFIX: _has_constructions,
}


@dataclass(frozen=True)
class Curve:
    run: str
    key: str
    points: tuple[tuple[int, float], ...]  # (step, value), by step
    dashed: bool = False


@dataclass(frozen=True)
class Panel:
    title: str
    curves: tuple[Curve, ...]  # only curves with points


def series(steps: Mapping[int, Metrics], key: str) -> tuple[tuple[int, float], ...]:
    """(step, value) of `key` at every step that has it (and measured something: `_MEASURED_AT`)."""
    measured = _MEASURED_AT.get(key, lambda metrics: True)
    return tuple((step, steps[step][key]) for step in sorted(steps) if key in steps[step] and measured(steps[step]))


def training_accuracy_key(steps: Mapping[int, Metrics]) -> str:
    """A training metric `.../acc/mean` of the run (not validation, not TAPO's), else the score."""
    names = {key for metrics in steps.values() for key in metrics}
    own = sorted(key for key in names if key.endswith("/acc/mean") and not key.startswith(("val", "tapo/")))
    return own[0] if own else SCORE_KEY


def kl_key(runs: Runs) -> str:
    """The first of `KL_KEYS` any run logs (the first of them when none does)."""
    names = {key for steps in runs.values() for metrics in steps.values() for key in metrics}
    return next((key for key in KL_KEYS if key in names), KL_KEYS[0])


def _layout(accuracy: str, kl: str, opsd: bool) -> list[tuple[str, tuple[tuple[str, bool], ...]]]:
    """(title, ((metric, dashed), ...)) of each panel, in order; `opsd`: with the OPSD panel."""
    opsd_panels = [("OPSD: KL to the privileged teacher (opsd/kl_estimate)", ((OPSD_KL, False),))] if opsd else []
    return [
        ("OTS weight mean (solid: inserted, dashed: kept prefix)", ((OTS_INSERTED, False), (OTS_PREFIX, True))),
        ("policy-gradient loss (actor/pg_loss)", (("actor/pg_loss", False),)),
        (f"training accuracy ({accuracy})", ((accuracy, False),)),
        ("gradient norm (actor/grad_norm)", (("actor/grad_norm", False),)),
        ("response length (response_length/mean)", (("response_length/mean", False),)),
        (f"KL ({kl})", ((kl, False),)),
        ("constructed rows inserted (tapo/constructed_rows)", (("tapo/constructed_rows", False),)),
        ("synthesis parse rate (tapo/parse_rate)", (("tapo/parse_rate", False),)),
        ("constructed-row accuracy (tapo/constructed_acc)", (("tapo/constructed_acc", False),)),
        *opsd_panels,
    ]


def training_panels(runs: Runs) -> list[Panel]:
    """The panels of the module docstring (the OPSD one when a run logs it), with each run's curves
    (runs in order)."""
    kl = kl_key(runs)
    opsd = any(OPSD_KL in metrics for steps in runs.values() for metrics in steps.values())
    accuracy = {run: training_accuracy_key(steps) for run, steps in runs.items()}
    titles = [title for title, _ in _layout(" / ".join(sorted(set(accuracy.values()))) or SCORE_KEY, kl, opsd)]
    curves: list[list[Curve]] = [[] for _ in titles]
    for run, steps in runs.items():
        for position, (_, keys) in enumerate(_layout(accuracy[run], kl, opsd)):
            for key, dashed in keys:
                points = series(steps, key)
                if points:
                    curves[position].append(Curve(run, key, points, dashed))
    return [Panel(title, tuple(panel_curves)) for title, panel_curves in zip(titles, curves)]


def plot_training_panels(runs: Runs, out: str | IO[bytes], title: str | None = None) -> list[Panel]:
    """Draw `training_panels(runs)` as a PNG (`FIGURE_SIZE` x `DPI` pixels for three rows of panels, a
    third taller per further row) to a path or binary file; returns the panels drawn. `runs`: {label: {step: {metric: value}}}, e.g. `read_run_metrics(...).steps`.

    Raises:
        ValueError: `runs` is empty.
    """
    if not runs:
        raise ValueError("no runs to plot: give at least one run's metrics")
    panels = training_panels(runs)
    colours = {run: f"C{index % 10}" for index, run in enumerate(runs)}
    # A Figure without pyplot renders with Agg and leaves matplotlib's global state alone.
    rows = -(-len(panels) // PANELS_PER_ROW)
    figure = Figure(figsize=(FIGURE_SIZE[0], FIGURE_SIZE[1] * rows / 3), dpi=DPI, layout="constrained")
    axes = figure.subplots(rows, PANELS_PER_ROW).flatten()
    for ax in axes[len(panels):]:
        ax.set_visible(False)
    for ax, panel in zip(axes, panels):
        ax.set_title(panel.title, fontsize=10)
        ax.set_xlabel("step")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        for curve in panel.curves:
            ax.plot([step for step, _ in curve.points], [value for _, value in curve.points], color=colours[curve.run],
                    linestyle="--" if curve.dashed else "-", marker="o", markersize=3)
        if not panel.curves:
            ax.text(0.5, 0.5, "no data", transform=ax.transAxes, ha="center", va="center", color="0.5")
    # One legend for the runs (their colours are the same in every panel).
    handles = [axes[0].plot([], [], color=colours[run], marker="o", markersize=3)[0] for run in runs]
    figure.legend(handles, list(runs), loc="outside upper center", ncol=min(len(runs), 6), frameon=False)
    if title:
        figure.suptitle(title)
    rendered = io.BytesIO()
    figure.savefig(rendered, format="png", dpi=DPI)
    # A palette of 128 colours keeps lines and text sharp at a third of the size (the page embeds it).
    palette = Image.open(rendered).convert("RGB").quantize(colors=PNG_COLOURS, method=Image.Quantize.MEDIANCUT)
    palette.save(out, format="PNG", optimize=True)
    return panels


def parse_run_argument(argument: str) -> tuple[str, str]:
    """`[LABEL=]PATH` as (label, path); an existing path is taken whole."""
    if os.path.exists(argument) or "=" not in argument:
        return default_label(argument), argument
    label, path = argument.split("=", 1)
    if not label:
        raise ValueError(f"empty label in {argument!r}: write LABEL=PATH")
    return label, path


def default_label(path: str) -> str:
    """A run folder's name; for a `metrics.jsonl`, its folder's name; else the file's name."""
    path = os.path.normpath(os.path.abspath(path))
    if os.path.basename(path) == METRICS_FILE:
        path = os.path.dirname(path)
    return os.path.basename(path)


def read_runs(arguments: list[str]) -> dict[str, dict[int, dict[str, float]]]:
    """{label: steps} of `[LABEL=]PATH` arguments, in order.

    Raises:
        ValueError: two runs have the same label, or a file holds no metrics.
        FileNotFoundError: a path does not exist (or a folder has no metrics.jsonl).
    """
    runs = {}
    for argument in arguments:
        label, path = parse_run_argument(argument)
        if label in runs:
            raise ValueError(f"two runs are labelled {label!r}: name them with LABEL=PATH")
        runs[label] = read_run_metrics(path).steps
    return runs


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", metavar="[LABEL=]METRICS",
                        help="a run folder, a file-logger JSONL or a console log, optionally labelled")
    parser.add_argument("-o", "--output", required=True, help="the PNG to write")
    parser.add_argument("--title", default=None, help="a title above the panels")
    args = parser.parse_args(argv)
    try:
        runs = read_runs(args.runs)
    except (FileNotFoundError, ValueError) as error:
        parser.error(str(error))
    plot_training_panels(runs, args.output, args.title)
    print(f"wrote {args.output} ({', '.join(runs)})")


if __name__ == "__main__":
    main()
