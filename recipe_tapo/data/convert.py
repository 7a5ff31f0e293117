"""Source records -> verl rows, with every skipped record counted by reason."""

import math
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field

from recipe_tapo.data.rows import make_row
from recipe_tapo.data.sources import SourceSpec

# (subset or None, row number within it, record)
LabelledRecord = tuple[str | None, int, dict]

SKIP_REASONS = (
    "no_problem_column",  # none of the spec's problem_fields in the record: a schema mismatch
    "no_answer_column",
    "unrecognised_prompt",  # the spec's problem_parser did not find the problem
    "empty_problem",
    "missing_answer",  # None, NaN or blank
    "duplicate_problem",  # same text (up to spacing) as an earlier row; DAPO-Math-17k repeats each problem
)


@dataclass
class Conversion:
    rows: list[dict] = field(default_factory=list)
    read: int = 0
    skipped: Counter = field(default_factory=Counter)
    first_record_columns: list[str] = field(default_factory=list)

    def summary(self, name: str) -> str:
        reasons = ", ".join(f"{reason}: {count}" for reason, count in sorted(self.skipped.items()))
        line = f"{name}: read {self.read}, kept {len(self.rows)}, skipped {sum(self.skipped.values())}"
        return f"{line} ({reasons})" if reasons else line


def _lookup(record: dict, dotted_name: str) -> tuple[bool, object]:
    value = record
    for part in dotted_name.split("."):
        if not isinstance(value, dict) or part not in value:
            return False, None
        value = value[part]
    return True, value


def _first_present(record: dict, names: tuple[str, ...]) -> tuple[bool, object]:
    for name in names:
        found, value = _lookup(record, name)
        if found:
            return True, value
    return False, None


def answer_text(value) -> str | None:
    """The answer as the string the reward compares, or None when there is none.

    Integer columns read back as floats when a value is missing (204 -> 204.0): integral floats
    are written as integers.
    """
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, float):
        if math.isnan(value):
            return None
        text = str(int(value)) if value.is_integer() else repr(value)
    else:
        text = str(value)
    text = text.strip()
    return text or None


def convert_records(spec: SourceSpec, records: Iterable[LabelledRecord], limit: int | None = None) -> Conversion:
    """Rows for `spec` from its records, stopping once `limit` rows are kept."""
    conversion = Conversion()
    seen_problems = set()
    for subset, row_number, record in records:
        if limit is not None and len(conversion.rows) >= limit:
            break
        if conversion.read == 0:
            conversion.first_record_columns = sorted(record)
        conversion.read += 1
        has_problem, problem = _first_present(record, spec.problem_fields)
        has_answer, answer = _first_present(record, spec.answer_fields)
        if not has_problem:
            conversion.skipped["no_problem_column"] += 1
            continue
        if not has_answer:
            conversion.skipped["no_answer_column"] += 1
            continue
        if spec.problem_parser is not None:
            problem = spec.problem_parser(problem)
            if problem is None:
                conversion.skipped["unrecognised_prompt"] += 1
                continue
        problem = "" if problem is None else str(problem).strip()
        if not problem:
            conversion.skipped["empty_problem"] += 1
            continue
        answer = answer_text(answer)
        if answer is None:
            conversion.skipped["missing_answer"] += 1
            continue
        problem_key = " ".join(problem.split())
        if problem_key in seen_problems:
            conversion.skipped["duplicate_problem"] += 1
            continue
        seen_problems.add(problem_key)
        has_id, source_id = _first_present(record, spec.id_fields)
        if not has_id or source_id is None:
            source_id = f"{subset}-{row_number}" if subset else str(row_number)
        _, solution = _first_present(record, spec.solution_fields)
        conversion.rows.append(
            make_row(spec.name, problem, answer, spec.split, index=len(conversion.rows), source_id=str(source_id),
                     solution=solution if isinstance(solution, str) else "")
        )
    return conversion
