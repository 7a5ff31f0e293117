"""A synthetic reward for smoke runs of the tiny random model (verl's custom-reward signature).

A randomly initialised model never produces a right answer, so a real math reward scores every
sample 0, every GRPO group is degenerate and every advantage is 0: a smoke test would then train on
nothing. This reward is 1 for responses with an even number of characters and 0 otherwise, so
sampled responses split roughly half-half within each group, whatever the model. It carries no
meaning about answers: use `recipe_tapo.reward.math_reward` for real runs.
"""


def compute_score(data_source, solution_str, ground_truth, extra_info=None, **kwargs) -> dict:
    even = len(solution_str) % 2 == 0
    return {"score": 1.0 if even else 0.0, "acc": even}
