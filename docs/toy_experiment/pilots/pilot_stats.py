"""Pilot figures (issue 23, pre-RL) from an evaluation's samples.jsonl on toy rows:

    python docs/toy_experiment/pilots/pilot_stats.py SAMPLES_JSONL DATA_PARQUET

overall and per-difficulty accuracy (terms, 2-digit terms), the ZPD filter at K (kept: 1..K-1 right),
the DCS band among the kept (>= 2 right and >= 4 wrong), the share of answers that reflect."""

import collections
import sys

import pandas as pd

from recipe_tapo.textio import iter_json_lines
from recipe_tapo.toy.task import first_wrong_step, parse_problem

samples_path, data_path = sys.argv[1], sys.argv[2]
texts = {str(row["extra_info"]["source_id"]): row["prompt"][0]["content"] for _, row in pd.read_parquet(data_path).iterrows()}
by_problem = collections.defaultdict(list)
for line in iter_json_lines(samples_path):  # model text: a broken line is named and skipped
    if not line.ok:
        print(f"{samples_path}: {line.error}", file=sys.stderr)
        continue
    by_problem[line.value["problem_id"]].append(line.value)
k = len(next(iter(by_problem.values())))
right = {problem_id: sum(sample["correct"] for sample in samples) for problem_id, samples in by_problem.items()}
samples = [sample for group in by_problem.values() for sample in group]
print(f"problems {len(by_problem)}, K={k}, sampled accuracy {100 * sum(s['correct'] for s in samples) / len(samples):.1f}%")

by_difficulty = collections.defaultdict(list)
for problem_id, count in right.items():
    problem = parse_problem(texts[problem_id])
    by_difficulty[(len(problem.terms), sum(term >= 10 for term in problem.terms[1:]))].append(count / k)
print("terms, 2-digit terms: problems, accuracy")
for key in sorted(by_difficulty):
    values = by_difficulty[key]
    print(f"  {key}: {len(values)}, {100 * sum(values) / len(values):.1f}%")

print("right-count histogram:", dict(sorted(collections.Counter(right.values()).items())))
kept = [count for count in right.values() if 1 <= count <= k - 1]
band = [count for count in kept if count >= 2 and k - count >= 4]
print(f"ZPD kept {len(kept)}/{len(right)} ({100 * len(kept) / len(right):.1f}%), "
      f"mean acc {100 * sum(kept) / k / max(1, len(kept)):.1f}%, DCS band {len(band)}/{len(kept)} "
      f"({100 * len(band) / max(1, len(kept)):.1f}%)")
reflecting = [sample for sample in samples if "Wait," in sample["response"]]
slipped = [sample for sample in samples if first_wrong_step(sample["response"]) is not None]
print(f"answers that reflect {100 * len(reflecting) / len(samples):.1f}%; right among them "
      f"{100 * sum(s['correct'] for s in reflecting) / max(1, len(reflecting)):.1f}%; "
      f"answers with a wrong line {100 * len(slipped) / len(samples):.1f}%")
