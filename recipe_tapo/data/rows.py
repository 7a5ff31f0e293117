"""The prompt and the verl row layout shared by every training and benchmark file.

One layout for all sources matters beyond tidiness: verl concatenates several validation files
into one dataset, which fails unless their columns and nested field types are identical.
"""

# The only instruction a model sees, for training and evaluation alike. The reward reads the last
# `\boxed{}` of the response, so this is what every prompt asks for.
PROMPT_SUFFIX = "Let's think step by step and output the final answer within \\boxed{}."
ABILITY = "math"
REWARD_STYLE = "rule"


def build_prompt(problem: str, suffix: str = PROMPT_SUFFIX) -> list[dict[str, str]]:
    """The chat prompt for a bare problem statement (`suffix=""`: the statement alone)."""
    return [{"role": "user", "content": f"{problem} {suffix}" if suffix else problem}]


def make_row(
    data_source: str,
    problem: str,
    answer: str,
    split: str,
    index: int,
    source_id: str,
    suffix: str = PROMPT_SUFFIX,
    solution: str = "",
) -> dict:
    """One verl row (`RLHFDataset`'s columns).

    `extra_info.problem` keeps the bare problem (no suffix) for anything that must quote the
    question, such as TAPO's synthesis prompts; `source_id` is the problem's id in its source;
    `extra_info.solution` a worked solution where the source has one ("" elsewhere, so every file
    keeps one layout), OPSD's privileged context.
    """
    return {
        "data_source": data_source,
        "prompt": build_prompt(problem, suffix),
        "ability": ABILITY,
        "reward_model": {"style": REWARD_STYLE, "ground_truth": answer},
        "extra_info": {"index": index, "split": split, "source_id": source_id, "problem": problem, "solution": solution},
    }
