"""Every dataset we ship, in one table: where it lives and which of its columns hold what.

The column names come from the dataset cards. A field is a tuple of candidate column names, first
present wins, and a dotted name reads a nested field (`reward_model.ground_truth`): if a source
renames a column, add the new name here and nothing else changes. A record with none of a field's
candidates is counted as `no_problem_column` / `no_answer_column`, and a source that yields no row
at all makes `prepare` fail with the columns it found.

The datasets themselves are not in this repository (several forbid commercial use); `prepare`
writes them where the user asks (run_scripts/prepare_data.sh: $HOME/data/tapo).
"""

import re
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class SourceSpec:
    name: str  # the rows' data_source
    split: str  # our split: "train" for RL data, "test" for benchmarks
    hub_id: str
    hub_subsets: tuple[str | None, ...]  # `load_dataset(hub_id, name=subset)` for each; rows are concatenated
    hub_split: str
    problem_fields: tuple[str, ...]
    answer_fields: tuple[str, ...]
    id_fields: tuple[str, ...]  # none present: "<subset>-<row number>"
    # Turns the problem field into the bare problem, or None when the row is not in the expected form.
    problem_parser: Callable[[object], str | None] | None = None
    # A worked solution, where the source has one (OPSD's privileged context, `extra_info.solution`).
    solution_fields: tuple[str, ...] = ()


# DAPO-Math-17k ships verl rows whose user message wraps the problem in an "Answer:" instruction:
#   "Solve the following math problem step by step. The last line of your response should be of the
#    form Answer: $Answer (without quotes) where $Answer is the answer to the problem.\n\n<problem>\n\n
#    Remember to put your answer on its own line after \"Answer:\"."
# Both ends are required, so that a change of wording shows up as skipped rows, not as prompts
# carrying two contradictory answer formats.
_DAPO_PREFIX = re.compile(
    r"^\s*Solve the following math problem step by step\..*?where \$Answer is the answer to the problem\.\s*",
    re.DOTALL,
)
_DAPO_SUFFIX = re.compile(r"\s*Remember to put your answer on its own line after \"Answer:\"\.?\s*$")


def dapo_problem(prompt) -> str | None:
    """The bare problem inside a DAPO-Math-17k chat prompt (a list of {role, content})."""
    if isinstance(prompt, str) or not hasattr(prompt, "__iter__"):
        return None
    user_messages = [message for message in prompt if isinstance(message, dict) and message.get("role") == "user"]
    if len(user_messages) != 1 or not isinstance(user_messages[0].get("content"), str):
        return None
    content = user_messages[0]["content"]
    prefix, suffix = _DAPO_PREFIX.search(content), _DAPO_SUFFIX.search(content)
    if not prefix or not suffix or prefix.end() > suffix.start():
        return None
    return content[prefix.end() : suffix.start()]


SOURCES: dict[str, SourceSpec] = {
    spec.name: spec
    for spec in [
        SourceSpec(
            name="deepscaler",
            split="train",
            hub_id="agentica-org/DeepScaleR-Preview-Dataset",
            hub_subsets=(None,),
            hub_split="train",
            problem_fields=("problem",),
            answer_fields=("answer",),
            id_fields=(),
            solution_fields=("solution",),
        ),
        SourceSpec(
            name="dapo_math_17k",
            split="train",
            hub_id="BytedTsinghua-SIA/DAPO-Math-17k",
            hub_subsets=(None,),
            hub_split="train",
            problem_fields=("prompt",),
            answer_fields=("reward_model.ground_truth",),
            id_fields=("extra_info.index",),
            problem_parser=dapo_problem,
        ),
        SourceSpec(
            name="math500",
            split="test",
            hub_id="HuggingFaceH4/MATH-500",
            hub_subsets=(None,),
            hub_split="test",
            problem_fields=("problem",),
            answer_fields=("answer",),
            id_fields=("unique_id",),
        ),
        SourceSpec(
            name="aime2024",
            split="test",
            hub_id="Maxwell-Jia/AIME_2024",
            hub_subsets=(None,),
            hub_split="train",
            problem_fields=("Problem", "problem"),
            answer_fields=("Answer", "answer"),
            id_fields=("ID", "id"),
        ),
        SourceSpec(
            # Second candidates match the alternative copy yentinglin/aime_2025 (id, problem, answer)
            # for use with --local.
            name="aime2025",
            split="test",
            hub_id="opencompass/AIME2025",
            hub_subsets=("AIME2025-I", "AIME2025-II"),
            hub_split="test",
            problem_fields=("question", "problem"),
            answer_fields=("answer",),
            id_fields=("id",),
        ),
        SourceSpec(
            name="hmmt2025",
            split="test",
            hub_id="MathArena/hmmt_feb_2025",
            hub_subsets=(None,),
            hub_split="train",
            problem_fields=("problem",),
            answer_fields=("answer",),
            id_fields=("problem_idx",),
        ),
    ]
}
