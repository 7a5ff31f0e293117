"""Start-up checks of a TAPO training run: settings of verl and of `tapo:` that cannot work together.

`check_tapo_run_config(config)` runs in the driver before Ray starts (recipe_tapo.main) and again in
the trainer. Every refusal names the keys involved; docs/configuration.md lists them all. Reads the
hydra config, and the model's `config.json` when the model path is a local folder (for its context
length). `check_paths_reach_every_node(config)`, run beside it in the driver, refuses a relative
local path that the workers of a multi-node run would each read against their own directory.
"""

from __future__ import annotations

import json
import os
import re
from typing import Any

from omegaconf import OmegaConf
from verl.trainer.ppo.utils import need_critic, need_reference_policy

from recipe_tapo.config import OpsdConfig, TapoConfig

# verl 0.9.1: estimators the TAPO trainer's loop runs. `tapo` with tapo.enable=false is exactly GRPO.
TAPO_ESTIMATOR = "tapo"
AGENT_LOOP_MANAGER = "recipe_tapo.workers.agent_loop.TapoAgentLoopManager"
# Policy losses in which a positive per-token factor on the advantage scales that token's loss
# (the clip side depends only on the advantage's sign): lambda, OTS and the separate loss
# normalisation are applied as such factors.
LINEAR_POLICY_LOSSES = ("vanilla", "gspo", "gpg", "cispo")


def check_tapo_run_config(config: Any) -> TapoConfig:
    """Validate the whole run config for the TAPO trainer; return the parsed `tapo:` section.

    Raises:
        ValueError: naming the keys of any setting that cannot work.
    """
    tapo = TapoConfig.from_omegaconf(config.get("tapo"))
    # Refused whatever tapo.enable says: recipe_tapo.main runs the legacy trainer in either case.
    _require(
        not bool(config.trainer.get("use_v1", False)),
        "trainer.use_v1=true: recipe_tapo.main runs verl's legacy trainer (verl.trainer.main_ppo_v0, "
        "RayPPOTrainer), the one the TAPO trainer subclasses, and never verl's V1 trainer. "
        "Set trainer.use_v1=false (the recipe's default).",
    )
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
    _check_seams(config)
    _check_unsupported(config)
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


def _check_seams(config: Any) -> None:
    """The verl settings through which TAPO attaches to verl's own loop (docs/trainer.md)."""
    _require(
        bool(config.trainer.get("balance_batch", False)),
        "tapo.enable=true needs trainer.balance_batch=true: the constructed rows join the batch in verl's "
        "_balance_batch, the one method verl 0.9.1 calls between the rollout and the rewards",
    )
    manager = config.actor_rollout_ref.rollout.get("agent", {}).get("agent_loop_manager_class")
    _require(
        manager is not None and _is_tapo_manager(str(manager)),
        f"tapo.enable=true needs actor_rollout_ref.rollout.agent.agent_loop_manager_class={AGENT_LOOP_MANAGER} "
        f"(or a subclass; got {manager!r}): the synthesis runs in the agent loop manager while the rollout "
        "replicas are awake",
    )
    _require(
        int(config.trainer.get("critic_warmup", 0)) == 0,
        "tapo.enable=true needs trainer.critic_warmup=0: the constructed rows are trained in the actor update",
    )


def _is_tapo_manager(path: str) -> bool:
    if path == AGENT_LOOP_MANAGER:
        return True
    from verl.utils.import_utils import load_class_from_fqn

    from recipe_tapo.workers.agent_loop import TapoAgentLoopManager

    try:
        manager = load_class_from_fqn(path, "AgentLoopManager")
    except (ImportError, AttributeError, ValueError) as error:
        raise ValueError(f"actor_rollout_ref.rollout.agent.agent_loop_manager_class={path!r}: {error}") from error
    return isinstance(manager, type) and issubclass(manager, TapoAgentLoopManager)


def _check_unsupported(config: Any) -> None:
    """verl features TAPO cannot serve, refused by name rather than discovered in a step."""
    actor = config.actor_rollout_ref.actor
    refusals = [
        (
            need_critic(config),
            "critic.enable=true: TAPO's advantages are outcome advantages (DAE), with no value model",
        ),
        (
            bool(actor.get("use_kl_loss", False)),
            "actor_rollout_ref.actor.use_kl_loss=true: the KL term would pull every constructed token, "
            "including the injected reflection the policy never sampled, towards the reference unweighted by OTS",
        ),
        (
            bool(config.algorithm.get("use_kl_in_reward", False)),
            "algorithm.use_kl_in_reward=true: the KL penalty would enter the constructed rows' rewards, and "
            "verl's adaptive KL controller averages over the zero-loss padding rows",
        ),
        (
            bool(config.reward.reward_model.get("enable", False))
            and not bool(config.reward.reward_model.get("enable_resource_pool", False)),
            "a colocated reward model (reward.reward_model.enable=true without enable_resource_pool): it scores "
            "after the rollout replicas sleep, and TAPO needs each group's rewards before its synthesis; give "
            "it its own pool (reward.reward_model.enable_resource_pool=true)",
        ),
        (
            bool(actor.get("use_prefix_grouper", False)),
            "actor_rollout_ref.actor.use_prefix_grouper=true: it groups rows by uid, and constructed and "
            "padding rows carry uids of their own",
        ),
        (
            bool(config.actor_rollout_ref.rollout.get("enable_rollout_routing_replay", False))
            or str(OmegaConf.select(config, "actor_rollout_ref.actor.router_replay.mode", default="disabled"))
            != "disabled",
            "routed-expert replay (rollout.enable_rollout_routing_replay / actor.router_replay): constructed "
            "rows were not routed by the rollout",
        ),
        (
            bool(OmegaConf.select(config, "distillation.enabled", default=False)),
            "distillation.enabled=true: constructed rows have no teacher log-probs",
        ),
        (
            bool(OmegaConf.select(config, "skip.rollout.enable", default=False)),
            "skip.rollout.enable=true: replayed rollouts would come without their synthesis",
        ),
    ]
    for refused, reason in refusals:
        _require(not refused, f"tapo.enable=true does not work with {reason}.")
    loss_mode = str(actor.get("policy_loss", {}).get("loss_mode", "vanilla"))
    _require(
        loss_mode in LINEAR_POLICY_LOSSES,
        f"tapo.enable=true with actor_rollout_ref.actor.policy_loss.loss_mode={loss_mode!r}: lambda, OTS and the "
        f"loss normalisation weight each token through its advantage, which scales its loss only in "
        f"{list(LINEAR_POLICY_LOSSES)}",
    )


def check_opsd_run_config(config: Any) -> OpsdConfig:
    """Validate the run config for OPSD (`opsd.enable=true`); return the parsed `opsd:` section.

    Raises:
        ValueError: naming the keys of any setting that cannot work.
    """
    opsd = OpsdConfig.from_omegaconf(config.get("opsd"))
    if not opsd.enable:
        return opsd
    _require(
        not TapoConfig.from_omegaconf(config.get("tapo")).enable,
        "opsd.enable=true needs tapo.enable=false: OPSD and TAPO are separate arms of the comparison",
    )
    estimator = str(config.algorithm.adv_estimator)
    _require(
        estimator in ("grpo", TAPO_ESTIMATOR),
        f"opsd.enable=true needs algorithm.adv_estimator=grpo (or tapo, which is GRPO with tapo.enable=false; "
        f"got {estimator!r}): OPSD's outcome advantage is GRPO's",
    )
    actor = config.actor_rollout_ref.actor
    _require(not need_critic(config), "opsd.enable=true does not work with a critic (critic.enable=true, GAE)")
    _require(
        not config.actor_rollout_ref.rollout.get("multi_turn", {}).get("enable", False),
        "opsd.enable=true supports single-turn rollouts only: set actor_rollout_ref.rollout.multi_turn.enable=false",
    )
    _require(
        not bool(OmegaConf.select(config, "distillation.enabled", default=False)),
        "opsd.enable=true does not work with distillation.enabled=true: OPSD's teacher is the policy itself",
    )
    rollout_correction = config.algorithm.get("rollout_correction") or {}
    _require(
        not rollout_correction.get("bypass_mode", False),
        "opsd.enable=true needs the old-log-prob pass (the student's log-probs): set "
        "algorithm.rollout_correction.bypass_mode=false",
    )
    loss_mode = str(actor.get("policy_loss", {}).get("loss_mode", "vanilla"))
    _require(
        loss_mode in LINEAR_POLICY_LOSSES,
        f"opsd.enable=true with actor_rollout_ref.actor.policy_loss.loss_mode={loss_mode!r}: the OPSD term is a "
        f"per-token advantage, trained as such only by {list(LINEAR_POLICY_LOSSES)}",
    )
    _require(
        opsd.teacher != "initial" or need_reference_policy(config),
        "opsd.teacher=initial scores with verl's reference worker, which verl 0.9.1 starts only with a KL term: "
        "set actor_rollout_ref.actor.use_kl_loss=true with actor_rollout_ref.actor.kl_loss_coef=0 (a reference "
        "worker, no KL in the loss), or opsd.teacher=current",
    )
    context = model_context_length(config)
    if context is not None:
        needed = opsd.max_prompt_tokens + int(config.data.max_response_length)
        _require(
            needed <= context,
            f"opsd.max_prompt_tokens ({opsd.max_prompt_tokens}) + data.max_response_length "
            f"({config.data.max_response_length}) = {needed} exceeds the model's context of {context} tokens "
            "(actor_rollout_ref.rollout.max_model_len, else the model's max_position_embeddings): lower "
            "opsd.max_prompt_tokens",
        )
    return opsd


# The paths every node's workers open (checkpoints are written by each rank). verl ships no code or
# working directory to the nodes (its Ray runtime_env sets working_dir to None), so each worker reads
# a relative path against the directory its own node's Ray was started in.
NODE_PATH_KEYS = ("actor_rollout_ref.model.path", "data.train_files", "data.val_files",
                  "trainer.default_local_dir", "tapo.dump.dir", "opsd.dump_dir")
# What transformers reads as a hub repository id when no such local folder exists.
HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9._-]+$")


def check_paths_reach_every_node(config: Any) -> None:
    """Refuse a relative local path in a key every node reads, on more than one node.

    On one node a relative path is safe: the driver starts Ray, and every worker runs in the
    driver's working directory. On several, each node's workers run where that node's Ray started.
    URLs (`hdfs://...`) and, for the model, hub ids (`Qwen/Qwen3-8B`, with no such folder here) pass.

    Raises:
        ValueError: naming the key and the path.
    """
    nodes = int(config.trainer.nnodes)
    if nodes <= 1:
        return
    for key in NODE_PATH_KEYS:
        value = OmegaConf.select(config, key, default=None)
        paths = [] if value is None else list(value) if OmegaConf.is_list(value) else [value]
        for path in map(str, paths):
            if os.path.isabs(os.path.expanduser(path)) or "://" in path:
                continue
            if key == "actor_rollout_ref.model.path" and HUB_ID.match(path) and not os.path.exists(path):
                continue
            raise ValueError(
                f"{key}={path!r} is a relative path, and trainer.nnodes={nodes}: the workers on every node "
                "read it against their own working directory (verl ships none to the nodes). Give an absolute "
                "path on storage every node sees (the run scripts make their paths absolute)."
            )


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
