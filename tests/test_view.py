"""The run view page (`python -m recipe_tapo.view`): content, escaping, broken dumps, the CLI."""

import base64
import dataclasses
import hashlib
import json
import os
import re
import shutil
from html.parser import HTMLParser

import pytest

from fixtures.hostile_dump import (
    BROKEN_LINES,
    CONTROLS,
    HOSTILE_STATUS,
    IMAGE,
    LONG_LINE,
    QUOTES,
    SCRIPT,
    UNBALANCED,
    write_hostile_dump,
)
from recipe_tapo.view.__main__ import build_page_input, load_decoder, main
from recipe_tapo.view.dump import (
    STATUS_MEANINGS,
    cap_per_step,
    locate_inputs,
    read_dump,
    status_counts_by_step,
    summarize,
)
from recipe_tapo.view.page import PageOptions, clean_text, render_page
from recipe_tapo.view.trajectory import heat_bin, reflection_length, token_pieces, token_view

FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures")
FIXTURE_RUN = os.path.join(FIXTURES, "view_run")
TOY_TOKENIZER = os.path.join(os.path.dirname(os.path.dirname(__file__)), "recipe_tapo", "toy", "cold_start_model")
VOID_ELEMENTS = {"meta", "img", "input", "br", "hr", "link"}


class Node:
    def __init__(self, tag, attrs, parent=None):
        self.tag, self.attrs, self.parent, self.children = tag, dict(attrs), parent, []

    @property
    def classes(self):
        return (self.attrs.get("class") or "").split()

    def text(self):
        return "".join(child if isinstance(child, str) else child.text() for child in self.children)

    def walk(self):
        yield self
        for child in self.children:
            if isinstance(child, Node):
                yield from child.walk()

    def find_all(self, tag=None, cls=None):
        return [node for node in self.walk()
                if (tag is None or node.tag == tag) and (cls is None or cls in node.classes)]


class TreeBuilder(HTMLParser):
    """The page as a tree; every element must be closed by its own end tag (the page writes them
    all), so markup that escaped escaping shows up as an unbalanced tag."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.root = self.current = Node("#document", {})
        self.unbalanced = []

    def handle_starttag(self, tag, attrs):
        node = Node(tag, attrs, self.current)
        self.current.children.append(node)
        if tag not in VOID_ELEMENTS:
            self.current = node

    def handle_startendtag(self, tag, attrs):
        self.current.children.append(Node(tag, attrs, self.current))

    def handle_endtag(self, tag):
        if tag in VOID_ELEMENTS:
            return
        if self.current.tag != tag:
            self.unbalanced.append((tag, self.current.tag))
            return
        self.current = self.current.parent

    def handle_data(self, data):
        self.current.children.append(data)


def parse(document):
    builder = TreeBuilder()
    builder.feed(document)
    builder.close()
    assert builder.unbalanced == [] and builder.current is builder.root
    return builder.root


def page_of(path, options=PageOptions(), **inputs):
    document = render_page(build_page_input(path, **inputs), options)
    return document, parse(document)


def records_of(tree):
    return tree.find_all("details", "record")


def record_at(tree, source, line):
    (record,) = [node for node in records_of(tree)
                 if node.find_all("span", "where")[0].text().endswith(f"{source}:{line}")]
    return record


@pytest.fixture(scope="module")
def toy_decode():
    return load_decoder(TOY_TOKENIZER)


@pytest.fixture
def hostile_run(tmp_path):
    """The fixture run with a fourth dump of hostile text and broken lines."""
    run = tmp_path / "hostile_run"
    shutil.copytree(FIXTURE_RUN, run)
    write_hostile_dump(run / "tapo_dump" / "step_000004.jsonl")
    return str(run)


# -- the fixture run --------------------------------------------------------------------------------


def test_every_record_of_the_fixture_dump_is_on_the_page_with_its_step_and_status():
    document, tree = page_of(FIXTURE_RUN)
    records = records_of(tree)
    shown = [(node.attrs["data-step"], node.attrs["data-status"], node.attrs["data-reward"]) for node in records]
    assert shown == [
        ("1", "anchor_not_found", ""), ("1", "missing_reconstruction", ""), ("1", "ok", "0.0"), ("1", "ok", "0.0"),
        ("2", "ok", "1.0"), ("2", "anchor_not_found", ""), ("2", "ok", "1.0"),
        ("3", "ok", "1.0"), ("3", "ok", "1.0"),  # the first lacks `step`: its file's step
    ]
    questions = [node.find_all("span", "q")[0].text() for node in records]
    assert questions[0] == "Compute 80 - 8 + 7 + 3." and questions[4] == "Compute 28 - 6 + 7 - 7 - 6."
    # the first inserted construction is open, the others closed
    assert ["open" in node.attrs for node in records] == [False, False, True] + [False] * 6


def test_the_summary_counts_attempts_insertions_parse_rate_accuracy_and_skipped_lines():
    _, tree = page_of(FIXTURE_RUN)
    cards = {node.find_all("div", "label")[0].text(): node.find_all("div", "value")[0].text()
             for node in tree.find_all("div", "card")}
    assert cards == {
        "steps with dumps (steps 1–3)": "3",
        "synthesis attempts": "9",
        "constructions inserted (66.7%)": "6",
        "parse rate (8 of 9 answered)": "88.9%",  # one missing_reconstruction
        "construction accuracy (4 of 6 scored)": "66.7%",
        "dump lines skipped (unreadable)": "2",
    }
    (skipped,) = [node for node in tree.find_all("section") if node.attrs.get("id") == "skipped"]
    first, second = [item.text() for item in skipped.find_all("li")]
    assert first.startswith("step_000002.jsonl: line 4 is not JSON: ")  # cut short
    assert second == "step_000003.jsonl: line 2 is not a JSON object"


def test_the_status_table_counts_each_step_by_status_ok_first():
    _, tree = page_of(FIXTURE_RUN)
    (section,) = [node for node in tree.find_all("section") if node.attrs.get("id") == "statuses"]
    table = section.find_all("table")[0]
    header = [cell.text() for cell in table.find_all("th")]
    rows = [[cell.text() for cell in row.find_all("td")] for row in table.find_all("tr")[1:]]
    assert header == ["step", "ok", "anchor_not_found", "missing_reconstruction", "all"]
    assert rows == [["1", "2", "1", "1", "4"], ["2", "2", "1", "·", "3"], ["3", "2", "·", "·", "2"],
                    ["all steps", "6", "2", "1", "9"]]


def test_counts_come_from_every_attempt_even_when_the_page_lists_fewer():
    document, tree = page_of(FIXTURE_RUN, PageOptions(max_records_per_step=1))
    records = records_of(tree)
    # one per step, an inserted one first
    assert [(node.attrs["data-step"], node.attrs["data-status"]) for node in records] == [
        ("1", "ok"), ("2", "ok"), ("3", "ok")]
    assert "at most 1 attempts per step" in document and "3 of 9" in document
    assert "construction accuracy (4 of 6 scored)" in document


def test_the_filters_offer_every_step_and_status_shown():
    _, tree = page_of(FIXTURE_RUN)
    (step,) = [node for node in tree.find_all("select") if node.attrs["id"] == "filter-step"]
    (status,) = [node for node in tree.find_all("select") if node.attrs["id"] == "filter-status"]
    assert [option.attrs["value"] for option in step.find_all("option")] == ["", "1", "2", "3"]
    assert [option.attrs["value"] for option in status.find_all("option")] == [
        "", "ok", "anchor_not_found", "missing_reconstruction"]
    assert {node.attrs["id"] for node in tree.find_all("input")} == {
        "filter-reward-min", "filter-reward-max", "filter-unscored"}


def _segments(pre):
    return [(cls, node.text()) for node in pre.find_all("span") for cls in node.classes if cls.startswith("seg-")]


def test_the_trajectory_is_coloured_kept_prefix_reflection_and_continuation():
    _, tree = page_of(FIXTURE_RUN)
    record = record_at(tree, "step_000002.jsonl", 1)
    trajectory = record.find_all("pre", "text")[3]  # question, wrong answer, analysis, trajectory
    assert _segments(trajectory) == [
        ("seg-kept", "28 - 6 = 22\n22 + 7 = 28\n"),
        ("seg-reflection", "Wait, 22 + 7 = 29, not 28."),
        ("seg-continuation", "\n29 - 7 = 22\n22 - 6 = 16\n\\boxed{16}"),
    ]
    wrong = record.find_all("pre", "text")[1]
    assert _segments(wrong) == [("seg-kept", "28 - 6 = 22\n22 + 7 = 28\n")]
    assert [node.text() for node in wrong.find_all("span", "cut")] == ["✂"]
    assert wrong.find_all("span", "dropped")[0].text() == "28 - 7 = 21\n21 - 6 = 15\n\\boxed{15}"


def test_without_a_tokenizer_the_ots_weights_are_a_strip_split_at_the_cut():
    _, tree = page_of(FIXTURE_RUN)
    record = record_at(tree, "step_000002.jsonl", 1)
    with open(os.path.join(FIXTURE_RUN, "tapo_dump", "step_000002.jsonl")) as dump:
        source = json.loads(dump.readline())
    weights = source["ots_weights"]
    (strip,) = record.find_all("svg", "strip")
    cells = []
    for rect in strip.find_all("rect"):
        (level,) = rect.classes
        cells += [int(level[1:])] * int(rect.attrs["width"])
    assert cells == [heat_bin(weight) for weight in weights]
    assert strip.find_all("line")[0].attrs["x1"] == str(source["cut_tokens"]) == "24"
    rows = [[cell.text() for cell in row.find_all("td")] for row in record.find_all("table")[0].find_all("tr")[1:]]
    inserted = weights[24:]
    assert rows == [
        ["kept prefix", "24", f"{sum(weights[:24]) / 24:.3f}", f"{min(weights[:24]):.3f}",
         str(sum(weight < 0.5 for weight in weights[:24]))],
        ["inserted (reflection + continuation, EOS)", str(len(inserted)), f"{sum(inserted) / len(inserted):.3f}",
         f"{min(inserted):.3f}", str(sum(weight < 0.5 for weight in inserted))],
    ]


def test_with_the_tokenizer_each_token_carries_its_segment_and_ots_heat(toy_decode):
    _, tree = page_of(FIXTURE_RUN, tokenizer=TOY_TOKENIZER)
    record = record_at(tree, "step_000002.jsonl", 1)
    with open(os.path.join(FIXTURE_RUN, "tapo_dump", "step_000002.jsonl")) as dump:
        source = json.loads(dump.readline())
    (tokens,) = record.find_all("pre", "tokens")
    spans = tokens.find_all("span")
    assert len(spans) == len(source["token_ids"])  # one character per token: one span each
    underline = [cls[2:] for span in spans for cls in span.classes if cls.startswith("u-")]
    reflection = len("Wait, 22 + 7 = 29, not 28.")
    assert underline == ["kept"] * 24 + ["reflection"] * reflection + ["continuation"] * (len(spans) - 24 - reflection)
    heat = [int(cls[1:]) for span in spans for cls in span.classes if re.fullmatch(r"h\d", cls)]
    assert heat == [heat_bin(weight) for weight in source["ots_weights"]]
    assert spans[-1].text() == "<|im_end|>" and "eos" in spans[-1].classes
    assert spans[24].attrs["title"] == f"token 24: w = {source['ots_weights'][24]:.3g}"
    assert not record.find_all("svg", "strip")
    rows = [[cell.text() for cell in row.find_all("td")][:2] for row in record.find_all("table")[0].find_all("tr")[1:]]
    assert rows == [["kept prefix", "24"], ["reflection", str(reflection)],
                    ["corrected continuation", str(len(spans) - 24 - reflection)]]


def test_an_older_record_without_fields_and_a_newer_one_with_more_both_show():
    _, tree = page_of(FIXTURE_RUN)
    old = record_at(tree, "step_000003.jsonl", 1)
    assert old.attrs["data-step"] == "3" and "OTS weights" not in old.text()
    assert "advantage–" in old.text().replace(" ", "")
    new = record_at(tree, "step_000003.jsonl", 3)
    (other,) = [node for node in new.find_all("details", "more") if node.text().startswith("Other fields")]
    assert other.find_all("dt")[0].text() == "prefix_net_advantage" and other.find_all("dd")[0].text() == "0.25"


def test_a_failed_splice_shows_no_cut_and_no_trajectory():
    _, tree = page_of(FIXTURE_RUN)
    record = record_at(tree, "step_000001.jsonl", 1)  # anchor_not_found: trajectory "" and cut_tokens 0
    assert not record.find_all("span", "cut") and "Trajectory" not in record.text()
    assert "anchor_not_found — the quoted step is nowhere in the wrong answer" in record.text()
    assert "kept prefix" not in record.text()


# -- untrusted text ---------------------------------------------------------------------------------


def test_hostile_model_text_is_shown_as_text_and_never_as_markup(hostile_run):
    document, tree = page_of(hostile_run, PageOptions(max_text_chars=5000))
    assert len(tree.find_all("script")) == 1 and "src" not in tree.find_all("script")[0].attrs
    assert len(tree.find_all("img")) == 1  # figure 3 only
    for node in tree.walk():
        assert not any(name.startswith("on") for name in node.attrs), node.tag
    hostile = [node for node in records_of(tree) if node.attrs["data-step"] == "4"]
    first, long_line, odd_types = hostile
    text = first.text()
    for snippet in (SCRIPT, IMAGE, UNBALANCED, QUOTES, clean_text(CONTROLS), "\ufffd"):
        assert snippet in text
    assert "</details><script>window.__hostile = 4</script>" in text  # the uid
    assert long_line.attrs["data-status"] == HOSTILE_STATUS
    assert long_line.find_all("span", "badge")[0].text() == HOSTILE_STATUS
    raw = [node for node in long_line.find_all("pre") if node.text().startswith("AAAA")]
    assert raw[0].text() == "A" * 5000 + f" … {len(LONG_LINE) - 5000:,} more characters not shown (--max-text-chars)"
    assert "not in the dump (or not text)" in odd_types.text()  # a question that is a list
    assert len(document.encode("utf-8")) < 400_000


def test_every_character_the_page_writes_is_valid_text(hostile_run, tmp_path):
    out = tmp_path / "page.html"
    main([hostile_run, "-o", str(out), "--max-text-chars", "100"])
    document = out.read_bytes().decode("utf-8")  # a lone surrogate could not have been written at all
    assert not re.search(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ud800-\udfff]", document)
    assert "nul␀ bell␇ esc␛ del␡ c1\ufffd" in document


def test_broken_dump_lines_are_skipped_counted_and_listed(hostile_run):
    _, tree = page_of(hostile_run)
    (skipped,) = [node for node in tree.find_all("section") if node.attrs.get("id") == "skipped"]
    reasons = [item.text() for item in skipped.find_all("li")]
    assert len(reasons) == 4 and skipped.find_all("h2")[0].text() == "Dump lines skipped (4)"
    assert reasons[2].startswith("step_000004.jsonl: line 4 is not valid UTF-8")
    assert reasons[3] == (f"step_000004.jsonl: line 5 has {len(BROKEN_LINES[1])} bytes, over the cap of 1048576 bytes "
                          "per line: not read")


def test_the_page_is_self_contained_and_its_policy_admits_only_its_own_style_and_script():
    document, tree = page_of(FIXTURE_RUN)
    for node in tree.walk():
        for name in ("src", "href"):
            assert node.attrs.get(name) is None or node.attrs[name].startswith("data:image/png;base64,"), node.tag
    assert not tree.find_all("link")
    (policy,) = [node.attrs["content"] for node in tree.find_all("meta")
                 if node.attrs.get("http-equiv") == "Content-Security-Policy"]

    def digest(tag):
        (block,) = re.findall(rf"<{tag}>(.*?)</{tag}>", document, re.S)
        return "'sha256-" + base64.b64encode(hashlib.sha256(block.encode()).digest()).decode() + "'"

    assert policy.startswith("default-src 'none'; img-src data:;")
    assert f"style-src {digest('style')};" in policy and f"script-src {digest('script')};" in policy


# -- segments and tokens ------------------------------------------------------------------------------


@pytest.mark.parametrize("inserted, reflection", [
    ("Wait, 22 + 7 = 29, not 28.\n29 - 7 = 22", "Wait, 22 + 7 = 29, not 28."),
    ("Wait, 7*8 is 56, not 54. So 56 + 1 = 57", "Wait, 7*8 is 56, not 54."),
    ("Wait, 3.5 is not 3.6!\nso", "Wait, 3.5 is not 3.6!"),  # a decimal point ends no sentence
    ("\n  Wait, that step was wrong\n7 - 2 = 5", "\n  Wait, that step was wrong\n"),  # leading blanks belong to it
    ("Wait, hmm? Then", "Wait, hmm?"),
    ("no sentence end at all", "no sentence end at all"),
    ("", ""),
])
def test_the_reflection_runs_through_the_first_line_break_or_sentence_end(inserted, reflection):
    assert inserted[:reflection_length(inserted)] == reflection


def test_token_pieces_rebuild_byte_level_text_and_merge_split_characters(tapo_tokenizer):
    text = "Wait, 7×8 = 56 😀 — naïve 中文\n\\boxed{56}"
    ids = tapo_tokenizer.encode(text, add_special_tokens=False)

    def decode(part):
        return tapo_tokenizer.decode(part, skip_special_tokens=False, clean_up_tokenization_spaces=False)

    pieces = token_pieces(ids, decode)
    assert "".join(piece.text for piece in pieces) == decode(ids) == text
    assert all("\ufffd" not in piece.text for piece in pieces)
    assert [piece.first for piece in pieces[1:]] == [piece.end for piece in pieces[:-1]] and pieces[-1].end == len(ids)
    assert any(piece.end - piece.first > 1 for piece in pieces)  # the emoji's bytes span tokens
    assert [piece.start for piece in pieces] == [sum(len(p.text) for p in pieces[:i]) for i in range(len(pieces))]


def test_a_tokenizer_that_decodes_other_text_is_named_and_the_text_estimate_used(tmp_path):
    view = token_view("abc", [1, 2, 3], 1, lambda ids: "x" * len(ids))
    assert isinstance(view, str) and "is it the run's tokenizer?" in view
    run = tmp_path / "run"
    shutil.copytree(FIXTURE_RUN, run)
    page = build_page_input(str(run))
    document = render_page(dataclasses.replace(page, decode=lambda ids: "x" * len(ids), tokenizer="bad"))
    assert "is it the run&#x27;s tokenizer?" in document and "the cut is estimated from the text" in document


def test_ids_the_tokenizer_cannot_decode_fall_back_to_the_text_estimate(tmp_path, toy_decode):
    with open(os.path.join(FIXTURE_RUN, "tapo_dump", "step_000002.jsonl")) as dump:
        record = json.loads(dump.readline())
    record["token_ids"][3] = -1  # a corrupt dump: the Rust decoder refuses negative ids
    path = tmp_path / "step_000002.jsonl"
    path.write_text(json.dumps(record) + "\n")
    page = dataclasses.replace(build_page_input(str(path)), decode=toy_decode, tokenizer=TOY_TOKENIZER)
    tree = parse(render_page(page))
    (only,) = records_of(tree)
    assert "the tokenizer cannot decode these ids (OverflowError" in only.text()
    assert _segments(only.find_all("pre", "text")[3])[1] == ("seg-reflection", "Wait, 22 + 7 = 29, not 28.")


# -- inputs and the CLI -------------------------------------------------------------------------------


def test_a_run_folder_a_dump_folder_and_a_dump_file_are_all_accepted(tmp_path):
    run = locate_inputs(FIXTURE_RUN)
    assert [os.path.basename(path) for path in run.dump_files] == [
        "step_000001.jsonl", "step_000002.jsonl", "step_000003.jsonl"]
    assert run.metrics_path == os.path.join(FIXTURE_RUN, "metrics.jsonl") and run.name == "view_run"
    folder = locate_inputs(os.path.join(FIXTURE_RUN, "tapo_dump"))
    assert folder.dump_files == run.dump_files and folder.metrics_path is None
    single = locate_inputs(run.dump_files[1])
    assert single.dump_files == [run.dump_files[1]]
    dump = read_dump(single.dump_files)
    assert len(dump.attempts) == 3 and len(dump.skipped) == 1


def test_counts_by_step_and_the_per_step_cap():
    dump = read_dump(locate_inputs(FIXTURE_RUN).dump_files)
    counts = status_counts_by_step(dump.attempts)
    assert {step: dict(counter) for step, counter in counts.items()} == {
        1: {"anchor_not_found": 1, "missing_reconstruction": 1, "ok": 2},
        2: {"ok": 2, "anchor_not_found": 1},
        3: {"ok": 2},
    }
    summary = summarize(dump.attempts)
    assert (summary.attempts, summary.inserted, summary.answered, summary.parsed, summary.scored, summary.correct) == (
        9, 6, 9, 8, 6, 4)
    capped = cap_per_step(dump.attempts, 2)
    assert [(attempt.step, attempt.line_number) for attempt in capped] == [
        (1, 3), (1, 4), (2, 1), (2, 3), (3, 1), (3, 3)]


def test_every_attempt_status_of_the_trainer_has_a_meaning():
    from recipe_tapo.workers.synthesis_plan import ATTEMPT_STATUSES

    assert set(ATTEMPT_STATUSES) <= set(STATUS_MEANINGS)


def test_the_cli_writes_the_page(tmp_path, capsys):
    out = tmp_path / "report.html"
    main([FIXTURE_RUN, "-o", str(out), "--title", "<fixture>"])
    document = out.read_text(encoding="utf-8")
    assert "<title>&lt;fixture&gt;</title>" in document and document.count('<details class="record"') == 9
    assert "9 attempts, 2 dump lines skipped" in capsys.readouterr().err


@pytest.mark.parametrize("make, message", [
    (lambda tmp: str(tmp / "missing"), "no run, dump folder or dump file at"),
    (lambda tmp: str(tmp), "nothing to show in"),
])
def test_the_cli_names_a_missing_or_empty_input(tmp_path, capsys, make, message):
    with pytest.raises(SystemExit):
        main([make(tmp_path), "-o", str(tmp_path / "out.html")])
    assert message in capsys.readouterr().err


def test_a_run_with_an_empty_metrics_file_still_shows_its_dumps(tmp_path):
    run = tmp_path / "run"
    shutil.copytree(FIXTURE_RUN, run)
    (run / "metrics.jsonl").write_text("")
    document, tree = page_of(str(run))
    assert len(records_of(tree)) == 9 and not tree.find_all("img")
    assert "figure 3 left out: no metrics in" in document


def test_a_missing_tokenizer_or_metrics_file_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="no tokenizer folder at"):
        build_page_input(FIXTURE_RUN, tokenizer=str(tmp_path / "nowhere"))
    with pytest.raises(FileNotFoundError, match="no metrics at"):
        build_page_input(FIXTURE_RUN, metrics=str(tmp_path / "nowhere.jsonl"))


def test_the_page_names_its_inputs_without_the_builders_folders(tmp_path, monkeypatch):
    """A committed or shared page must not carry the machine it was built on: an absolute path
    shows as its last component, a relative one as given."""
    run = tmp_path / "home" / "someone" / "my_run"
    shutil.copytree(FIXTURE_RUN, run)
    (run / "metrics.jsonl").write_text("")  # the note naming the metrics file shows too
    document, tree = page_of(str(run), tokenizer=os.path.abspath(TOY_TOKENIZER))
    header = tree.find_all("p", "sub")[0].text()
    assert header.startswith("my_run · ") and "tokenizer cold_start_model" in header
    assert "figure 3 left out: no metrics in metrics.jsonl" in document
    assert str(tmp_path) not in document and os.path.dirname(os.path.abspath(TOY_TOKENIZER)) not in document
    monkeypatch.chdir(tmp_path / "home")
    _, tree = page_of(os.path.join("someone", "my_run"))
    assert tree.find_all("p", "sub")[0].text().startswith("someone/my_run · ")
