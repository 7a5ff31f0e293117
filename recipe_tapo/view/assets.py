"""The run view page's style sheet and script, inlined into every page (no file is fetched).

The page's Content-Security-Policy admits exactly these two blocks by their hashes, so the page
needs no style attributes and no other script: any markup that escaped escaping could not run.
"""

from __future__ import annotations

from recipe_tapo.view.trajectory import HEAT_BINS

# The strip draws tokens of weight about 1 in this grey (the heat bin is transparent in text).
_NEUTRAL_STRIP_FILL = "#e8ebef"


def _heat_rules() -> str:
    rules = []
    for index, (_, background, colour, _) in enumerate(HEAT_BINS):
        fill = _NEUTRAL_STRIP_FILL if background == "transparent" else background
        rules.append(f".h{index}{{background:{background};color:{colour}}}rect.h{index},.swatch.h{index}{{fill:{fill};"
                     f"background:{fill}}}")
    return "\n".join(rules)


STYLE = """
:root{--ink:#1f2328;--muted:#59636e;--line:#d1d9e0;--panel:#f6f8fa;--kept:#fbd3d0;--reflection:#fcefa9;
--continuation:#cdf0d4;--kept-line:#e5534b;--reflection-line:#d4a72c;--continuation-line:#2da44e}
*{box-sizing:border-box}
body{margin:0;color:var(--ink);background:#fff;font:15px/1.55 system-ui,-apple-system,"Segoe UI",Roboto,
"Helvetica Neue",Arial,"Noto Sans",sans-serif}
main{max-width:1180px;margin:0 auto;padding:28px 28px 72px}
h1{font-size:26px;line-height:1.25;margin:0 0 6px}
h2{font-size:19px;margin:40px 0 12px;padding-bottom:6px;border-bottom:1px solid var(--line)}
h3{font-size:12px;text-transform:uppercase;letter-spacing:.05em;color:var(--muted);margin:18px 0 6px}
p{margin:6px 0}
.sub,.note{color:var(--muted);font-size:13px}
code,pre,.mono{font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,"Liberation Mono","DejaVu Sans Mono",monospace;
font-size:13px}
.cards{display:grid;grid-template-columns:repeat(auto-fill,minmax(160px,1fr));gap:10px;margin-top:18px}
.card{background:var(--panel);border:1px solid var(--line);border-radius:8px;padding:10px 12px}
.card .value{font-size:22px;font-weight:600;font-variant-numeric:tabular-nums}
.card .label{font-size:12px;color:var(--muted)}
.card.warn{background:#fff8c5;border-color:#d4a72c}
.scroll{overflow-x:auto}
table{border-collapse:collapse;font-size:13px;font-variant-numeric:tabular-nums}
th,td{border-bottom:1px solid var(--line);padding:4px 10px;text-align:right;white-space:nowrap}
th:first-child,td:first-child{text-align:left}
thead th{background:var(--panel);font-weight:600}
tfoot td{font-weight:600}
td.zero{color:#b8bfc6}
img.panels{display:block;width:100%;height:auto;border:1px solid var(--line);border-radius:8px}
.filters{position:sticky;top:0;z-index:2;display:flex;flex-wrap:wrap;gap:8px 18px;align-items:center;
padding:10px 12px;background:rgba(255,255,255,.97);border:1px solid var(--line);border-radius:8px;font-size:13px}
.filters label{display:flex;gap:6px;align-items:center}
.filters input[type=number]{width:6.5em}
.filters button{font:inherit;padding:2px 10px}
.filters .count{margin-left:auto;color:var(--muted)}
.legend{display:flex;flex-wrap:wrap;gap:6px 16px;align-items:center;margin:12px 0;font-size:12px;color:var(--muted)}
.swatch{display:inline-block;width:1.1em;height:.9em;margin-right:4px;vertical-align:-1px;border-radius:2px;
border:1px solid rgba(0,0,0,.15)}
.swatch.kept{background:var(--kept)}.swatch.reflection{background:var(--reflection)}
.swatch.continuation{background:var(--continuation)}
details.record{scroll-margin-top:96px;margin:10px 0;border:1px solid var(--line);border-radius:8px;background:#fff}
details.record>summary{display:flex;flex-wrap:wrap;gap:4px 12px;align-items:baseline;padding:8px 12px;cursor:pointer}
details.record>summary::before{content:"\\25B8";color:var(--muted)}
details.record[open]>summary::before{content:"\\25BE"}
details.record[open]>summary{background:var(--panel);border-bottom:1px solid var(--line);border-radius:8px 8px 0 0}
.record .body{padding:4px 16px 16px}
.where{color:var(--muted);font-size:13px;font-variant-numeric:tabular-nums}
.badge{padding:1px 8px;border-radius:999px;font-size:12px;font-weight:600;background:#eaeef2;color:#424a53}
.badge.ok{background:#dafbe1;color:#116329}.badge.fail{background:#ffebe9;color:#a40e26}
.q{flex:1 1 240px;min-width:0;overflow:hidden;text-overflow:ellipsis;white-space:nowrap}
.nums{color:var(--muted);font-size:13px;font-variant-numeric:tabular-nums}
dl.facts{display:grid;grid-template-columns:max-content 1fr;gap:2px 16px;margin:12px 0;font-size:13px}
dl.facts dt{color:var(--muted)}dl.facts dd{margin:0;font-variant-numeric:tabular-nums;overflow-wrap:anywhere}
.text{margin:0;padding:8px 10px;max-height:30em;overflow:auto;white-space:pre-wrap;overflow-wrap:anywhere;
background:var(--panel);border:1px solid var(--line);border-radius:6px}
.seg-kept{background:var(--kept)}.seg-reflection{background:var(--reflection)}
.seg-continuation{background:var(--continuation)}
.dropped{color:var(--muted);text-decoration:line-through;text-decoration-color:rgba(0,0,0,.3)}
.cut{padding:0 2px;color:#b42318;font-weight:700}
.tokens span{border-bottom:3px solid transparent}
.tokens .u-kept{border-bottom-color:var(--kept-line)}.tokens .u-reflection{border-bottom-color:var(--reflection-line)}
.tokens .u-continuation{border-bottom-color:var(--continuation-line)}
.tokens .eos{font-style:italic}
svg.strip{display:block;width:100%;height:24px;margin:4px 0;background:#fff;border:1px solid var(--line);
border-radius:4px}
svg.strip line{stroke:#b42318;stroke-width:2px;vector-effect:non-scaling-stroke}
.clipped{color:#9a6700;font-style:italic}
details.more{margin-top:10px}details.more>summary{cursor:pointer;color:var(--muted);font-size:13px}
[hidden]{display:none!important}
""" + _heat_rules() + "\n"


SCRIPT = """
"use strict";
(() => {
  const records = Array.from(document.querySelectorAll("details.record"));
  const byId = (id) => document.getElementById(id);
  const step = byId("filter-step"), status = byId("filter-status"), low = byId("filter-reward-min"),
    high = byId("filter-reward-max"), unscored = byId("filter-unscored"), count = byId("filter-count");
  if (!step) return;
  const bound = (input) => (input.value.trim() === "" ? null : Number(input.value));
  const shown = (record) => {
    const data = record.dataset;
    if (step.value !== "" && data.step !== step.value) return false;
    if (status.value !== "" && data.status !== status.value) return false;
    if (data.reward === "") return unscored.checked;
    const reward = Number(data.reward), min = bound(low), max = bound(high);
    return (min === null || reward >= min) && (max === null || reward <= max);
  };
  const apply = () => {
    let visible = 0;
    for (const record of records) {
      record.hidden = !shown(record);
      if (!record.hidden) visible += 1;
    }
    count.textContent = visible + " of " + records.length + " attempts shown";
  };
  for (const input of [step, status, low, high, unscored]) {
    input.addEventListener("input", apply);
    input.addEventListener("change", apply);
  }
  const openAll = (open) => () => { for (const record of records) if (!record.hidden) record.open = open; };
  byId("expand-all").addEventListener("click", openAll(true));
  byId("collapse-all").addEventListener("click", openAll(false));
  apply();
})();
"""
