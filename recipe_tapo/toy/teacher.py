"""A programmatic teacher for the toy task: synthesis targets written from the first wrong step.

Used only to build the toy cold start's synthesis-task examples (the policy then learns the format
from them); in the RL runs the policy writes its own synthesis. It has the interface of
`tapo.synthesis.text_source` (`recipe_tapo.workers.synthesis_plan.SynthesisTextSource`): built as
`ToyTeacher(trainer_config, tokenizer)`, called with (requests, timeout_s).

Its output follows the request's mode and `tapo.synthesis.prefix_end`: with `after_error` the
reconstruction keeps the wrong step and reflects on it ("Wait, 52 - 8 = 44, not 45."), then
continues correctly; with `before_error` it restarts the wrong step correctly.

The analysis checks the wrong answer's steps in order up to the first wrong one ("47 + 5 = 52 ok.
52 - 8 = 44, not 45."). A diagnosis that names the wrong step outright ("Step 2: ...") was measured
unlearnable for the 0.6M toy policy: after 900 cold-start steps its own synthesis parsed 93% of the
time, but no anchor was a line of the wrong answer (splice rate 0%), since it had to find the wrong
line in one jump. Checking line by line turns that into copying the next line and redoing its
arithmetic, which the policy already does when it solves.
"""

from __future__ import annotations

from typing import Any

from recipe_tapo.toy.task import continue_from, first_uncaught_wrong_step, kept_step_lines, parse_problem, reflection_line
from recipe_tapo.workers.synthesis_plan import GeneratedText, SynthesisRequest


def _tapo_value(config: Any, key: str, default: Any) -> Any:
    node = config.get("tapo", {}) if hasattr(config, "get") else {}
    for part in key.split("."):
        node = node.get(part, None) if hasattr(node, "get") else None
        if node is None:
            return default
    return node


class ToyTeacher:
    def __init__(self, config: Any = None, tokenizer: Any = None) -> None:
        self.prefix_end = str(_tapo_value(config, "synthesis.prefix_end", "after_error"))
        self.tokenizer = tokenizer

    def __call__(self, requests: list[SynthesisRequest], timeout_s: float) -> list[GeneratedText | None]:
        outputs: list[GeneratedText | None] = []
        for request in requests:
            text = self.write(request)
            if text is None:
                outputs.append(None)
            else:
                count = len(self.tokenizer.encode(text, add_special_tokens=False)) if self.tokenizer else len(text)
                outputs.append(GeneratedText(text, count))
        return outputs

    def write(self, request: SynthesisRequest) -> str | None:
        """The target for one request, or None when the wrong answer has no wrong step to fix."""
        problem = parse_problem(request.question)
        found = first_uncaught_wrong_step(request.wrong)
        if problem is None or found is None:
            return None
        step_index, step = found
        lines = request.wrong.split("\n")
        if step_index >= len(problem.ops) or problem.terms[step_index + 1] != step.term:
            return None  # the wrong answer does not follow the problem's steps
        wrong_result = step.line.rsplit("=", 1)[1].strip()
        # a caught slip is not checked again: its reflection already says the right value
        checked = [f"{lines[index].strip()} ok." for index in kept_step_lines(request.wrong) if index < step.line_index]
        analysis = " ".join([*checked, f"{step.left} {step.op} {step.term} = {step.correct}, not {wrong_result}."])
        if self.prefix_end == "after_error":
            fix = [reflection_line(step)]
            fix += continue_from(step.correct, problem, step_index + 1)
            kept = lines[: step.line_index + 1]
        else:
            fix = continue_from(step.left, problem, step_index)
            kept = lines[: step.line_index]
        if request.mode == "anchor":
            return (
                f"<analysis>{analysis}</analysis>\n<anchor>{step.line}</anchor>\n"
                f"<reconstruction>\n" + "\n".join(fix) + "\n</reconstruction>"
            )
        return f"<analysis>{analysis}</analysis>\n<reconstruction>\n" + "\n".join(kept + fix) + "\n</reconstruction>"
