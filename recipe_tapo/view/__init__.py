"""The run view: what TAPO trained on and how training went, from a run's dumps and metrics.

- `python -m recipe_tapo.view RUN_OR_DUMP -o report.html`: one self-contained HTML page of the
  synthesis attempts (the paper's figure 2 per construction) with figure 3 embedded
  (`recipe_tapo.view.__main__`);
- `python -m recipe_tapo.view.panels [LABEL=]METRICS ... -o fig3.png`: figure 3 alone, one run or
  several overlaid; `plot_training_panels` for Python callers (`recipe_tapo.view.panels`).
"""
