"""The run view: one self-contained HTML page of what TAPO trained on and how training went.

    python -m recipe_tapo.view RUN_OR_DUMP -o report.html [--tokenizer MODEL_DIR] [--metrics FILE]
        [--compare LABEL=RUN_OR_METRICS ...] [--max-records-per-step N] [--max-text-chars N] [--title TEXT]

RUN_OR_DUMP is a run folder (`tapo_dump/step_NNNNNN.jsonl` and/or verl's file-logger
`metrics.jsonl`), a dump folder (`step_NNNNNN.jsonl`) or one dump file. The page has:
- a summary (steps, attempts, constructions inserted, parse rate, construction accuracy, dump
  lines skipped) and the paper's figure 3 from the metrics (`recipe_tapo.view.panels`; the run
  folder's `metrics.jsonl`, or --metrics: a file-logger JSONL or a console log), with the runs of
  --compare overlaid (e.g. `--compare grpo=RUN_DIR` for a GRPO arm);
- the attempts per step by status (the failure reasons), for every attempt of the dump;
- every attempt (one dump record), collapsible, with filters by step, status and reward: the
  question, the wrong answer with the cut marked, the analysis, the trajectory coloured kept
  prefix (red) / reflection (yellow) / corrected continuation (green) as in the paper's figure 2
  (the rule: `recipe_tapo.view.trajectory`), the OTS weights per token, status and reason, reward,
  acc and advantage, the right answer and the raw synthesis output, and any other field.

--tokenizer names the policy's HF tokenizer folder (e.g. the run's `actor_rollout_ref.model.path`;
read locally, never downloaded): the trajectory is then decoded token by token, the cut is exact
and the OTS weights colour the tokens themselves. Without it the weights are drawn as a strip, one
cell per token, split at the cut. --max-records-per-step keeps the page small for long runs (the
inserted attempts of a step first); the counts always cover the whole dump.

Example (the toy main job, README):
    python -m recipe_tapo.view /tmp/tapo_toy -o report.html --tokenizer recipe_tapo/toy/cold_start_model
"""

from __future__ import annotations

import argparse
import os
import sys

from recipe_tapo.view.dump import locate_inputs, read_dump
from recipe_tapo.view.metrics import read_run_metrics
from recipe_tapo.view.page import Decode, PageInput, PageOptions, render_page
from recipe_tapo.view.panels import parse_run_argument


def load_decoder(path: str) -> Decode:
    """ids -> text with the HF tokenizer in folder `path`, as the trainer decodes (special tokens
    kept, no clean-up of spaces); never downloads.

    Raises:
        FileNotFoundError: `path` is not a folder.
    """
    if not os.path.isdir(path):
        raise FileNotFoundError(f"no tokenizer folder at {path}")
    from transformers import AutoTokenizer  # slow to import, and only needed here

    tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    return lambda ids: tokenizer.decode(ids, skip_special_tokens=False, clean_up_tokenization_spaces=False)


def shown_path(path: str) -> str:
    """A path as the committed or shared page may show it: a relative path as given (it names
    nothing outside the folder it was run from), an absolute one by its last component only, so
    the page does not carry the builder's folders (home, user name, scratch disk)."""
    if os.path.isabs(os.path.expanduser(path)):
        return os.path.basename(os.path.normpath(os.path.expanduser(path))) or path
    return os.path.normpath(path)


def build_page_input(path: str, metrics: str | None = None, compare: list[str] = (), tokenizer: str | None = None,
                     title: str | None = None) -> PageInput:
    """Read everything the page of `path` shows (see the module docstring).

    Raises:
        FileNotFoundError: `path`, the metrics, a compared run or the tokenizer does not exist.
        ValueError: --metrics or a compared run holds no metrics, or two runs share a label.
    """
    inputs = locate_inputs(path)
    dump = read_dump(inputs.dump_files)
    notes = []
    runs = {}
    metrics_path = metrics or inputs.metrics_path
    if metrics_path is not None:
        try:
            run = read_run_metrics(metrics_path)
        except ValueError as error:
            if metrics is not None:
                raise
            # the run folder's own metrics.jsonl may be empty (a run killed early): the dumps still show
            notes.append(f"figure 3 left out: {str(error).replace(metrics_path, shown_path(metrics_path))}")
        else:
            runs[inputs.name] = run.steps
            if run.skipped_lines:
                notes.append(f"{shown_path(run.path)}: {run.skipped_lines} metrics line(s) skipped (unreadable)")
    for argument in compare:
        label, compared = parse_run_argument(argument)
        if label in runs:
            raise ValueError(f"two runs are labelled {label!r}: name them with --compare LABEL=PATH")
        runs[label] = read_run_metrics(compared).steps
    return PageInput(
        title=title or f"TAPO run view: {inputs.name}",
        source=shown_path(path),
        dump=dump,
        runs=runs,
        notes=tuple(notes),
        tokenizer=shown_path(tokenizer) if tokenizer else None,
        decode=load_decoder(tokenizer) if tokenizer else None,
    )


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m recipe_tapo.view", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("path", metavar="RUN_OR_DUMP", help="a run folder, a dump folder or one dump file")
    parser.add_argument("-o", "--output", required=True, help="the HTML file to write")
    parser.add_argument("--tokenizer", default=None, help="the policy's HF tokenizer folder (per-token view)")
    parser.add_argument("--metrics", default=None, help="the run's metrics: a file-logger JSONL or a console log")
    parser.add_argument("--compare", action="append", default=[], metavar="LABEL=RUN_OR_METRICS",
                        help="another run's metrics overlaid on figure 3 (repeatable)")
    parser.add_argument("--max-records-per-step", type=_positive, default=None,
                        help="list at most N attempts per step (inserted ones first); default all")
    parser.add_argument("--max-text-chars", type=_positive, default=PageOptions.max_text_chars,
                        help="clip each text shown to N characters (default %(default)s)")
    parser.add_argument("--title", default=None)
    args = parser.parse_args(argv)
    try:
        page = build_page_input(args.path, args.metrics, args.compare, args.tokenizer, args.title)
    except (FileNotFoundError, ValueError) as error:
        parser.error(str(error))
    options = PageOptions(max_text_chars=args.max_text_chars, max_records_per_step=args.max_records_per_step)
    document = render_page(page, options)
    with open(args.output, "w", encoding="utf-8") as sink:
        sink.write(document)
    print(f"wrote {args.output} ({len(document.encode('utf-8')) / 1024:.0f} KiB): {len(page.dump.attempts)} attempts, "
          f"{len(page.dump.skipped)} dump lines skipped", file=sys.stderr)


if __name__ == "__main__":
    main()
