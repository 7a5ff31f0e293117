"""The run view as one self-contained HTML page (`render_page`).

Everything the page shows from a dump is model text or comes from it, so all of it is untrusted:
each string is cleaned (`clean_text`) and HTML-escaped where it is written, and the page's
Content-Security-Policy admits only its own inline style sheet and script (by hash) and `data:`
images, so nothing is fetched and no markup that reached the page could run. Long texts are
clipped to `PageOptions.max_text_chars` characters, with the number of characters left out shown.
"""

from __future__ import annotations

import base64
import hashlib
import html
import io
import json
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from recipe_tapo.view.assets import SCRIPT, STYLE
from recipe_tapo.view.dump import (
    INSERTED,
    STATUS_MEANINGS,
    Attempt,
    Dump,
    bool_field,
    cap_per_step,
    int_field,
    int_list_field,
    number_field,
    number_list_field,
    status_counts_by_step,
    summarize,
    text_field,
)
from recipe_tapo.view.panels import plot_training_panels
from recipe_tapo.view.trajectory import (
    CONTINUATION,
    HEAT_BINS,
    KEPT,
    REFLECTION,
    SEGMENT_LABELS,
    SUPPRESSED_BELOW,
    TextSegments,
    TokenView,
    heat_bin,
    heat_runs,
    kept_chars_of_wrong,
    reflection_length,
    segments_from_text,
    token_view,
    weight_stats,
)

Decode = Callable[[list[int]], str]

# Fields the page shows in their own place; any other field of a record is listed as it is.
SHOWN_FIELDS = frozenset({
    "step", "uid", "status", "wrong_row", "right_row", "question", "wrong", "wrong_ids", "right", "synthesis",
    "analysis", "cut_tokens", "prefix_fraction", "trajectory", "token_ids", "reward", "acc", "orig_rewards",
    "advantage", "ots_weights", "synthesis_tokens",
})

# Characters that are not text: C0 controls other than tab, line feed and carriage return become
# their visible control pictures (U+2400...), DEL U+2421, C1 controls and UTF-16 surrogates (a lone
# one cannot even be written as UTF-8) U+FFFD. One character for one, so offsets stay valid.
_CLEAN = {code: 0x2400 + code for code in range(0x20) if code not in (0x09, 0x0A, 0x0D)}
_CLEAN |= {0x7F: 0x2421} | {code: 0xFFFD for code in range(0x80, 0xA0)}
_CLEAN |= {code: 0xFFFD for code in range(0xD800, 0xE000)}


def clean_text(text: str) -> str:
    """`text` with every character that is not displayable text replaced (see `_CLEAN`)."""
    return text.translate(_CLEAN)


def escape(value: Any) -> str:
    """Any value as inert HTML text (attribute-safe: quotes are escaped too)."""
    return html.escape(clean_text(str(value)), quote=True)


@dataclass(frozen=True)
class PageOptions:
    max_text_chars: int = 20_000  # per text shown (question, answers, synthesis, trajectory, field)
    max_records_per_step: int | None = None  # None: every attempt


@dataclass(frozen=True)
class PageInput:
    """What one page shows: the dump, the runs' metrics for figure 3 ({label: {step: metrics}}),
    notes about what could not be read, and the tokenizer (its path and decoder) if one was given."""

    title: str
    source: str
    dump: Dump
    runs: Mapping[str, Mapping[int, Mapping[str, float]]] = field(default_factory=dict)
    notes: tuple[str, ...] = ()
    tokenizer: str | None = None
    decode: Decode | None = None


def _csp_hash(text: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode("utf-8")).digest()).decode("ascii") + "'"


def render_page(page: PageInput, options: PageOptions = PageOptions()) -> str:
    """The whole HTML document."""
    policy = (f"default-src 'none'; img-src data:; style-src {_csp_hash(STYLE)}; script-src {_csp_hash(SCRIPT)}; "
              "base-uri 'none'; form-action 'none'")
    shown = cap_per_step(page.dump.attempts, options.max_records_per_step)
    body = "\n".join([
        _header(page),
        _panels_section(page),
        _status_section(page.dump, shown, options),
        _records_section(page, shown, options),
        _skipped_section(page.dump),
    ])
    return (f'<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
            f'<meta http-equiv="Content-Security-Policy" content="{escape(policy)}">\n'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">\n'
            f"<title>{escape(page.title)}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n<main>\n{body}\n</main>\n"
            f"<script>{SCRIPT}</script>\n</body>\n</html>\n")


# -- numbers --------------------------------------------------------------------------------------


def _number(value: float | None, digits: int = 3) -> str:
    return "–" if value is None else f"{value:.{digits}g}"


def _count(value: int | None) -> str:
    return "–" if value is None else str(value)


def _percent(part: int, whole: int) -> str:
    return "–" if not whole else f"{100 * part / whole:.1f}%"


def _clip(text: str, limit: int) -> tuple[str, int]:
    """The first `limit` characters of `text`, and how many were left out."""
    return (text, 0) if len(text) <= limit else (text[:limit], len(text) - limit)


def _clipped_note(left_out: int) -> str:
    if not left_out:
        return ""
    return f'<span class="clipped"> … {left_out:,} more characters not shown (--max-text-chars)</span>'


def _text_block(text: str | None, options: PageOptions, missing: str = "not in the dump (or not text)") -> str:
    if text is None:
        return f'<p class="note">{escape(missing)}</p>'
    shown, left_out = _clip(text, options.max_text_chars)
    return f'<pre class="text">{escape(shown)}{_clipped_note(left_out)}</pre>'


# -- header, panels, counts -----------------------------------------------------------------------


def _card(value: str, label: str, warn: bool = False) -> str:
    return (f'<div class="card{" warn" if warn else ""}"><div class="value">{escape(value)}</div>'
            f'<div class="label">{escape(label)}</div></div>')


def _header(page: PageInput) -> str:
    summary = summarize(page.dump.attempts)
    steps = summary.steps
    step_range = f"steps {steps[0]}–{steps[-1]}" if steps else "no step"
    tokenizer = (f"tokenizer {page.tokenizer}" if page.tokenizer
                 else "no tokenizer (--tokenizer): OTS weights per token as a strip, cut estimated from the text")
    cards = [
        _card(str(len(steps)), f"steps with dumps ({step_range})"),
        _card(str(summary.attempts), "synthesis attempts"),
        _card(str(summary.inserted), f"constructions inserted ({_percent(summary.inserted, summary.attempts)})"),
        _card(_percent(summary.parsed, summary.answered),
              f"parse rate ({summary.parsed} of {summary.answered} answered)"),
        _card(_percent(summary.correct, summary.scored),
              f"construction accuracy ({summary.correct} of {summary.scored} scored)"),
        _card(str(len(page.dump.skipped)), "dump lines skipped (unreadable)", warn=bool(page.dump.skipped)),
    ]
    notes = "".join(f'<p class="note">{escape(note)}</p>' for note in page.notes)
    return (f"<header>\n<h1>{escape(page.title)}</h1>\n<p class=\"sub\">{escape(page.source)} · "
            f"{len(page.dump.files)} dump file(s) · {escape(tokenizer)}</p>\n{notes}"
            f'<div class="cards">{"".join(cards)}</div>\n</header>')


def _panels_section(page: PageInput) -> str:
    heading = '<section id="panels">\n<h2>Training (the paper\'s figure 3)</h2>\n'
    if not page.runs:
        return heading + ('<p class="note">No metrics to plot: give the run\'s file-logger JSONL or console log with '
                          "--metrics.</p>\n</section>")
    png = io.BytesIO()
    panels = plot_training_panels(page.runs, png)
    with_tapo = {curve.run for panel in panels for curve in panel.curves if curve.key.startswith("tapo/")}
    missing = [run for run in page.runs if run not in with_tapo]
    image = base64.b64encode(png.getvalue()).decode("ascii")
    caption = (f"Runs: {', '.join(page.runs)}. Lines per run: one colour; OTS weights of the inserted tokens solid, "
               "of the kept prefix dashed. Steps where a rate or mean had nothing to measure are left out.")
    if missing:
        caption += f" No tapo/ metrics (e.g. GRPO): {', '.join(missing)}."
    return (heading + f'<img class="panels" alt="training metrics per step" src="data:image/png;base64,{image}">\n'
            f'<p class="note">{escape(caption)}</p>\n</section>')


def _status_order(totals: Mapping[str, int]) -> list[str]:
    """`ok` first, then the other statuses, most frequent first."""
    return sorted(totals, key=lambda status: (status != INSERTED, -totals[status], status))


def _step_label(step: int | None) -> str:
    return "unknown" if step is None else str(step)


def _status_section(dump: Dump, shown: list[Attempt], options: PageOptions) -> str:
    counts = status_counts_by_step(dump.attempts)
    heading = '<section id="statuses">\n<h2>Attempts per step, by status</h2>\n'
    if not counts:
        return heading + '<p class="note">No synthesis attempts in the dump.</p>\n</section>'
    total = sum(counts.values(), Counter())
    statuses = _status_order(total)
    head = "".join(f'<th title="{escape(STATUS_MEANINGS.get(status, ""))}">{escape(status)}</th>'
                   for status in statuses)

    def row(label: str, counter: Mapping[str, int]) -> str:
        cells = "".join(f"<td>{counter[status]}</td>" if counter.get(status) else '<td class="zero">·</td>'
                        for status in statuses)
        return f"<tr><td>{escape(label)}</td>{cells}<td>{sum(counter.values())}</td></tr>"

    rows = "".join(row(_step_label(step), counter) for step, counter in counts.items())
    meanings = "; ".join(f"{status}: {STATUS_MEANINGS[status]}" for status in statuses if status in STATUS_MEANINGS)
    cap = ""
    if len(shown) < len(dump.attempts):
        cap = (f'<p class="note">The page lists at most {options.max_records_per_step} attempts per step '
               f"(--max-records-per-step; inserted ones first): {len(shown)} of {len(dump.attempts)}. "
               "The counts here and above cover all of them.</p>")
    return (heading + f'<div class="scroll"><table><thead><tr><th>step</th>{head}<th>all</th></tr></thead>'
            f"<tbody>{rows}</tbody><tfoot>{row('all steps', total)}</tfoot></table></div>\n"
            f'<p class="note">{escape(meanings)}.</p>\n{cap}</section>')


def _skipped_section(dump: Dump, listed: int = 50) -> str:
    if not dump.skipped:
        return ""
    items = "".join(f"<li><code>{escape(line.source)}</code>: {escape(line.reason)}</li>"
                    for line in dump.skipped[:listed])
    more = f"<li>… and {len(dump.skipped) - listed} more</li>" if len(dump.skipped) > listed else ""
    return (f'<section id="skipped">\n<h2>Dump lines skipped ({len(dump.skipped)})</h2>\n'
            f'<p class="note">Lines that could not be read as a record (recipe_tapo.textio).</p>\n'
            f"<ul>{items}{more}</ul>\n</section>")


# -- records --------------------------------------------------------------------------------------


def _filters(shown: list[Attempt]) -> str:
    steps = sorted({attempt.step for attempt in shown if attempt.step is not None})
    statuses = _status_order(Counter(attempt.status for attempt in shown))
    step_options = "".join(f'<option value="{step}">{step}</option>' for step in steps)
    status_options = "".join(f'<option value="{escape(status)}">{escape(status)}</option>' for status in statuses)
    return (
        '<div class="filters">'
        f'<label>step <select id="filter-step"><option value="">all</option>{step_options}</select></label>'
        f'<label>status <select id="filter-status"><option value="">all</option>{status_options}</select></label>'
        '<label>reward from <input id="filter-reward-min" type="number" step="any"></label>'
        '<label>to <input id="filter-reward-max" type="number" step="any"></label>'
        '<label><input id="filter-unscored" type="checkbox" checked> unscored</label>'
        '<button id="expand-all" type="button">expand all</button>'
        '<button id="collapse-all" type="button">collapse all</button>'
        f'<span class="count" id="filter-count">{len(shown)} of {len(shown)} attempts shown</span></div>'
    )


def _legend() -> str:
    segments = "".join(f'<span><span class="swatch {segment}"></span>{escape(label)}</span>'
                       for segment, label in SEGMENT_LABELS.items())
    heat = "".join(f'<span><span class="swatch h{index}"></span>{escape(label)}</span>'
                   for index, (_, _, _, label) in enumerate(HEAT_BINS))
    return (f'<div class="legend"><strong>trajectory</strong>{segments}</div>'
            f'<div class="legend"><strong>OTS weight</strong>{heat}</div>'
            '<p class="note">The reflection is the inserted text through its first line break or sentence end; the '
            "corrected continuation is the rest (recipe_tapo.view.trajectory). OTS weight w = clamp(exp(log p + H), "
            "0.01, 10) per trained token: low where the model found the token unlikely.</p>")


def _records_section(page: PageInput, shown: list[Attempt], options: PageOptions) -> str:
    heading = '<section id="records">\n<h2>Synthesis attempts</h2>\n'
    if not shown:
        return heading + '<p class="note">No synthesis attempts to show.</p>\n</section>'
    # The first inserted construction starts open: the reader sees one trajectory at once.
    first_inserted = next((index for index, attempt in enumerate(shown) if attempt.status == INSERTED), None)
    records = "\n".join(_record(attempt, index, page.decode, options, opened=index == first_inserted)
                         for index, attempt in enumerate(shown))
    return heading + _filters(shown) + _legend() + f"\n{records}\n</section>"


@dataclass(frozen=True)
class _Construction:
    """How one record's trajectory is drawn: its segments, tokens if decoded, notes on either."""

    segments: TextSegments | None = None
    tokens: TokenView | None = None
    wrong_cut: int | None = None
    notes: tuple[str, ...] = ()


def _construction(record: dict[str, Any], decode: Decode | None) -> _Construction:
    """The segments of the record's trajectory: from its tokens when the tokenizer decodes them to
    the trajectory; else, with the tokenizer, from the kept ids of the wrong answer (a trajectory
    that was not trained has no token_ids); else estimated from the text."""
    trajectory, wrong = text_field(record, "trajectory"), text_field(record, "wrong") or ""
    cut, token_ids, wrong_ids = (int_field(record, "cut_tokens"), int_list_field(record, "token_ids"),
                                 int_list_field(record, "wrong_ids"))
    if not trajectory:  # a splice that failed early leaves "" (and cut_tokens 0): there is no cut
        return _Construction()
    mismatch = None
    try:
        if decode is not None and cut is not None and token_ids is not None:
            tokens = token_view(trajectory, token_ids, cut, decode)
            if isinstance(tokens, TokenView):
                return _Construction(tokens.segments, tokens, tokens.segments.kept_end)
            mismatch = tokens
        elif decode is not None and cut is not None and wrong_ids is not None:
            kept = kept_chars_of_wrong(wrong, wrong_ids, cut, decode)
            if kept is not None and trajectory.startswith(wrong[:kept]):
                segments = TextSegments(kept, kept + reflection_length(trajectory[kept:]))
                return _Construction(segments, None, kept)
            mismatch = "the tokenizer decodes the kept wrong_ids to other text than the wrong answer: is it the run's?"
    except (OverflowError, TypeError, ValueError) as error:  # ids the tokenizer cannot take (e.g. negative)
        mismatch = f"the tokenizer cannot decode these ids ({type(error).__name__}: {error})"
    segments = segments_from_text(trajectory, wrong)
    estimated = ("the cut is estimated from the text (where the trajectory departs from the wrong answer); the "
                 "trained cut lies at or a little before it (--tokenizer makes it exact)")
    return _Construction(segments, None, segments.kept_end, tuple(note for note in (mismatch, estimated) if note))


def _summary_line(attempt: Attempt) -> str:
    record = attempt.record
    status = attempt.status
    question = (text_field(record, "question") or "").strip().split("\n", 1)[0]
    acc = bool_field(record, "acc")
    numbers = [f"reward {_number(number_field(record, 'reward'))}",
               "right" if acc else "wrong" if acc is False else "not scored"]
    advantage = number_field(record, "advantage")
    if advantage is not None:
        numbers.append(f"advantage {advantage:+.3f}")
    badge = "ok" if status == INSERTED else "fail"
    return (f'<summary><span class="where">step {escape(_step_label(attempt.step))} · '
            f"{escape(attempt.source)}:{attempt.line_number}</span>"
            f'<span class="badge {badge}">{escape(status)}</span><span class="q">{escape(question[:160])}</span>'
            f'<span class="nums">{escape(" · ".join(numbers))}</span></summary>')


def _facts(attempt: Attempt) -> str:
    record = attempt.record
    status = attempt.status
    facts = [("status", status + (f" — {STATUS_MEANINGS[status]}" if status in STATUS_MEANINGS else ""))]
    acc = bool_field(record, "acc")
    facts.append(("reward", f"{_number(number_field(record, 'reward'))} "
                            f"({'right' if acc else 'wrong' if acc is False else 'not scored'})"))
    facts.append(("advantage", f"{_number(number_field(record, 'advantage'))} (DAE, before lambda and OTS)"))
    group = number_list_field(record, "orig_rewards")
    if group:
        facts.append(("group rewards", " ".join(_number(value) for value in group)
                      + f" (mean {_number(sum(group) / len(group))})"))
    cut, wrong_ids, fraction = (int_field(record, "cut_tokens"), int_list_field(record, "wrong_ids"),
                                number_field(record, "prefix_fraction"))
    trajectory = text_field(record, "trajectory")
    if cut is not None and trajectory:
        of = f" of {len(wrong_ids)}" if wrong_ids is not None else ""
        facts.append(("kept prefix", f"{cut}{of} tokens of the wrong answer"
                                     + (f" ({100 * fraction:.0f}%)" if fraction is not None else "")))
    token_ids = int_list_field(record, "token_ids")
    if token_ids is not None:
        facts.append(("trained tokens", f"{len(token_ids)} (EOS included)"))
    elif trajectory:
        facts.append(("trained tokens", "none: the trajectory below was not trained"))
    facts.append(("synthesis tokens", _number(number_field(record, "synthesis_tokens"), 6)))
    facts.append(("group uid", text_field(record, "uid") or "–"))
    rows = [int_field(record, key) for key in ("wrong_row", "right_row")]
    facts.append(("batch rows", f"wrong {_count(rows[0])}, right {_count(rows[1])}"))
    items = "".join(f"<dt>{escape(name)}</dt><dd>{escape(value)}</dd>" for name, value in facts)
    return f'<dl class="facts">{items}</dl>'


def _wrong_with_cut(record: dict[str, Any], construction: _Construction, options: PageOptions) -> str:
    wrong = text_field(record, "wrong")
    if wrong is None or construction.wrong_cut is None:
        return _text_block(wrong, options)
    cut = min(construction.wrong_cut, len(wrong))
    kept, kept_left_out = _clip(wrong[:cut], options.max_text_chars)
    rest, rest_left_out = _clip(wrong[cut:], max(options.max_text_chars - len(kept), 0))
    return (f'<pre class="text"><span class="seg-kept">{escape(kept)}</span>{_clipped_note(kept_left_out)}'
            f'<span class="cut" title="the cut: the wrong answer is kept up to here">✂</span>'
            f'<span class="dropped">{escape(rest)}</span>{_clipped_note(rest_left_out)}</pre>')


def _trajectory_text(trajectory: str, segments: TextSegments, options: PageOptions) -> str:
    shown, left_out = _clip(trajectory, options.max_text_chars)
    parts = "".join(f'<span class="seg-{segment}">{escape(text)}</span>' for segment, text in segments.parts(shown))
    return f'<pre class="text">{parts}{_clipped_note(left_out)}</pre>'


def _piece_weight(weights: list[float] | None, first: int, end: int) -> float | None:
    """The lowest weight of the piece's tokens (the most suppressed shows), None without weights."""
    if not weights or end > len(weights):
        return None
    return min(weights[first:end])


def _token_text(tokens: TokenView, weights: list[float] | None, trajectory_length: int, options: PageOptions) -> str:
    spans, shown = [], 0
    for piece, segment in zip(tokens.pieces, tokens.piece_segments):
        if shown >= options.max_text_chars:
            break
        weight = _piece_weight(weights, piece.first, piece.end)
        classes = [f"u-{segment}"] + ([f"h{heat_bin(weight)}"] if weight is not None else [])
        if piece.start >= trajectory_length:
            classes.append("eos")
        title = f"token {piece.first}" if piece.end - piece.first == 1 else f"tokens {piece.first}-{piece.end - 1}"
        if weight is not None:
            title += ": w = " + ", ".join(f"{value:.3g}" for value in weights[piece.first:piece.end])
        # A line break is drawn as a visible mark before it, so that its weight has a colour.
        text = piece.text.replace("\n", "↵\n")
        spans.append(f'<span class="{" ".join(classes)}" title="{escape(title)}">{escape(text)}</span>')
        shown += len(piece.text)
    left_out = sum(len(piece.text) for piece in tokens.pieces) - shown
    return f'<pre class="text tokens">{"".join(spans)}{_clipped_note(left_out)}</pre>'


def _strip(weights: list[float], cut: int | None) -> str:
    """The OTS weights as one SVG strip, a cell per token, a line at the cut."""
    rects = "".join(f'<rect class="h{level}" x="{start}" y="0" width="{count}" height="1"/>'
                    for start, count, level in heat_runs(weights))
    line = f'<line x1="{cut}" y1="0" x2="{cut}" y2="1"/>' if cut is not None and 0 < cut < len(weights) else ""
    return (f'<svg class="strip" viewBox="0 0 {len(weights)} 1" preserveAspectRatio="none" role="img" '
            f'aria-label="OTS weight per trained token">{rects}{line}</svg>')


def _stats_table(parts: list[tuple[str, list[float]]]) -> str:
    rows = []
    for label, weights in parts:
        stats = weight_stats(weights)
        if stats is None:
            rows.append(f"<tr><td>{escape(label)}</td><td>0</td><td>–</td><td>–</td><td>–</td></tr>")
        else:
            rows.append(f"<tr><td>{escape(label)}</td><td>{stats.tokens}</td><td>{stats.mean:.3f}</td>"
                        f"<td>{stats.minimum:.3f}</td><td>{stats.suppressed}</td></tr>")
    return ('<div class="scroll"><table><thead><tr><th>part</th><th>tokens</th><th>mean w</th><th>min w</th>'
            f"<th>w &lt; {SUPPRESSED_BELOW}</th></tr></thead><tbody>{''.join(rows)}</tbody></table></div>")


def _ots_section(record: dict[str, Any], construction: _Construction) -> str:
    weights = number_list_field(record, "ots_weights")
    if weights is None:
        return ""
    token_ids = int_list_field(record, "token_ids")
    notes = []
    if token_ids is not None and len(token_ids) != len(weights):
        notes.append(f"{len(weights)} weights for {len(token_ids)} trained tokens")
    cut = int_field(record, "cut_tokens")
    if construction.tokens is not None:
        by_segment: dict[str, list[float]] = {KEPT: [], REFLECTION: [], CONTINUATION: []}
        for piece, segment in zip(construction.tokens.pieces, construction.tokens.piece_segments):
            by_segment[segment].extend(weights[piece.first:piece.end])
        parts = [(SEGMENT_LABELS[segment], values) for segment, values in by_segment.items()]
        strip = ""
    else:
        kept = cut if cut is not None else 0
        parts = [(SEGMENT_LABELS[KEPT], weights[:kept]), ("inserted (reflection + continuation, EOS)", weights[kept:])]
        strip = (_strip(weights, cut) + '<p class="note">One cell per trained token, in order; the red line is the '
                 "cut. Give --tokenizer to see the weights on the tokens themselves.</p>")
    note = "".join(f'<p class="note">{escape(text)}</p>' for text in notes)
    return f"<h3>OTS weights</h3>{strip}{_stats_table(parts)}{note}"


def _other_fields(record: dict[str, Any], options: PageOptions) -> str:
    extra = {key: value for key, value in record.items() if key not in SHOWN_FIELDS}
    if not extra:
        return ""
    rows = []
    for key, value in extra.items():
        text, left_out = _clip(json.dumps(value, ensure_ascii=False), options.max_text_chars)
        rows.append(f"<dt>{escape(key)}</dt><dd><code>{escape(text)}</code>{_clipped_note(left_out)}</dd>")
    return (f'<details class="more"><summary>Other fields ({len(extra)})</summary>'
            f'<dl class="facts">{"".join(rows)}</dl></details>')


def _record(attempt: Attempt, index: int, decode: Decode | None, options: PageOptions, opened: bool = False) -> str:
    record = attempt.record
    construction = _construction(record, decode)
    reward = number_field(record, "reward")
    parts = [_facts(attempt), "<h3>Question</h3>", _text_block(text_field(record, "question"), options)]
    parts += ["<h3>Wrong answer" + (", cut marked" if construction.wrong_cut is not None else "") + "</h3>",
              _wrong_with_cut(record, construction, options)]
    analysis = text_field(record, "analysis")
    if analysis is not None:
        parts += ["<h3>Analysis</h3>", _text_block(analysis, options)]
    trajectory = text_field(record, "trajectory")
    if trajectory and construction.segments is not None:
        trained = int_list_field(record, "token_ids") is not None
        parts += ["<h3>Trained trajectory</h3>" if trained else "<h3>Trajectory (not trained)</h3>",
                  _trajectory_text(trajectory, construction.segments, options)]
        if construction.tokens is not None:
            parts += ["<h3>Tokens</h3>", _token_text(construction.tokens, number_list_field(record, "ots_weights"),
                                                     len(trajectory), options)]
        parts += [f'<p class="note">{escape(note)}</p>' for note in construction.notes]
    parts.append(_ots_section(record, construction))
    parts.append(f'<details class="more"><summary>Right answer (the guidance in the synthesis prompt)</summary>'
                 f'{_text_block(text_field(record, "right"), options)}</details>')
    parts.append(f'<details class="more"><summary>Raw synthesis output</summary>'
                 f'{_text_block(text_field(record, "synthesis"), options, "no synthesis output")}</details>')
    parts.append(_other_fields(record, options))
    step = "" if attempt.step is None else str(attempt.step)
    return (f'<details class="record"{" open" if opened else ""} id="attempt-{index}" data-step="{escape(step)}" '
            f'data-status="{escape(attempt.status)}" data-reward="{"" if reward is None else repr(reward)}">'
            f'{_summary_line(attempt)}<div class="body">{"".join(parts)}</div></details>')
