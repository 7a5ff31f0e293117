"""Start-up checks of a TAPO training run: settings of verl and of `tapo:` that cannot work together.

`check_tapo_run_config(config)` runs in the driver before Ray starts (recipe_tapo.main) and again in
the trainer. Every refusal names the keys involved. Pure: reads the hydra config, and the model's
`config.json` when the model path is a local folder (for its context length).
"""

from __future__ import annotations

import json
import os
from typing import Any

from recipe_tapo.config import TapoConfig

# verl 0.9.1: estimators the TAPO trainer's loop runs. `tapo` with tapo.enable=false is exactly GRPO.
TAPO_ESTIMATOR = "tapo"


def check_tapo_run_config(config: Any) -> TapoConfig:
    """Validate the whole run config for the TAPO trainer; return the parsed `tapo:` section.

    Raises:
        ValueError: naming the keys of any setting that cannot work.
    """
    tapo = TapoConfig.from_omegaconf(config.get("tapo"))
    if not tapo.enable:
        return tapo
    estimator = str(config.algorithm.adv_estimator)
    _require(
        estimator == TAPO_ESTIMATOR,
        f"tapo.enable=true needs algorithm.adv_estimator=tapo (got {estimator!r}): another estimator would "
        "normalise the constructed rows together with the original ones (contaminating G_orig). "
        "Set algorithm.adv_estimator=tapo, or tapo.enable=false for a plain run.",
    )
    rollout_correction = config.algorithm.get("rollout_correction") or {}
    _require(
        not rollout_correction.get("bypass_mode", False),
        "tapo.enable=true does not work with algorithm.rollout_correction.bypass_mode=true: bypass mode "
        "trains on the rollout's log-probs, and constructed rows were not sampled by the rollout. "
        "Use the decoupled mode (bypass_mode=false).",
    )
    rollout = config.actor_rollout_ref.rollout
    _require(
        not rollout.get("multi_turn", {}).get("enable", False),
        "tapo.enable=true supports single-turn rollouts only: set actor_rollout_ref.rollout.multi_turn.enable=false",
    )
    response_length = int(config.data.max_response_length)
    if tapo.splicing.max_response_length is not None:
        _require(
            tapo.splicing.max_response_length <= response_length,
            f"tapo.splicing.max_response_length ({tapo.splicing.max_response_length}) exceeds "
            f"data.max_response_length ({response_length}): constructed rows share the batch's response width",
        )
    context = model_context_length(config)
    if context is not None:
        needed = tapo.synthesis.max_prompt_tokens + tapo.synthesis.max_new_tokens
        _require(
            needed <= context,
            f"tapo.synthesis.max_prompt_tokens ({tapo.synthesis.max_prompt_tokens}) + tapo.synthesis.max_new_tokens "
            f"({tapo.synthesis.max_new_tokens}) = {needed} exceeds the rollout's context of {context} tokens "
            "(actor_rollout_ref.rollout.max_model_len, else the model's max_position_embeddings): "
            "lower the synthesis budgets or raise rollout.max_model_len",
        )
    if tapo.synthesis.mode == "verbatim":
        _require(
            tapo.synthesis.max_new_tokens >= response_length,
            f"tapo.synthesis.mode=verbatim re-emits the wrong answer (up to data.max_response_length={response_length} "
            f"tokens) before the correction, but tapo.synthesis.max_new_tokens is {tapo.synthesis.max_new_tokens}: "
            "raise it to at least data.max_response_length, or use tapo.synthesis.mode=anchor",
        )
    return tapo


def model_context_length(config: Any) -> int | None:
    """The rollout's context: `rollout.max_model_len`, else the model's `max_position_embeddings`
    (as verl's vLLM server decides), else None when the model is not a local folder."""
    rollout = config.actor_rollout_ref.rollout
    if rollout.get("max_model_len") is not None:
        return int(rollout.max_model_len)
    if rollout.get("name") == "hf":  # the CPU backend's server: prompt + response lengths
        return int(config.data.max_prompt_length) + int(config.data.max_response_length)
    path = os.path.join(os.path.expanduser(str(config.actor_rollout_ref.model.path)), "config.json")
    if not os.path.isfile(path):
        return None
    with open(path, encoding="utf-8") as file:
        model_config = json.load(file)
    model_config = model_config.get("text_config", model_config)
    value = model_config.get("max_position_embeddings")
    return int(value) if value is not None else None


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise ValueError(message)
