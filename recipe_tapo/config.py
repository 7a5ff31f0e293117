"""Typed TAPO configuration: the `tapo:` section of the trainer yaml (arXiv 2606.18844).

Defaults are the paper's values where the paper gives one (docs/method.md) and this
project's documented choices elsewhere (section 9). `config/tapo_defaults.yaml` holds the same values
with a comment per key; a test keeps the two in agreement.

Every section validates itself on construction, and `TapoConfig` refuses settings that can never
give a constructed row a non-zero advantage, so a mistake surfaces at start-up, not after a day of
training that silently learned nothing from the constructions.
"""

from __future__ import annotations

import dataclasses
import importlib.resources
import os
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

SYNTHESIS_MODES = ("verbatim", "anchor")
PREFIX_ENDS = ("after_error", "before_error")
# Every synthesis template, built-in or a user's own, must contain these.
TEMPLATE_PLACEHOLDERS = ("question", "wrong_answer", "right_answer")
KEEP_POLICIES = ("all", "correct_only")
REF_GROUP_SCOPES = ("query", "batch")
DEGENERATE_POLICIES = ("orig_baseline", "zero")
LOSS_NORMALIZATIONS = ("separate", "joint")


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise ValueError(message)


def _require_choice(value: str, choices: tuple[str, ...], key: str) -> None:
    _require(value in choices, f"tapo.{key} must be one of {list(choices)}, got {value!r}")


@dataclass(frozen=True)
class SelectionConfig:
    """Difficulty-aware Candidate Selection (DCS, section 2 step 2).

    A group (the K rollouts of one prompt) is eligible iff it has at least `n_pos` correct and
    `n_neg` incorrect answers; at most `m_max` of its wrong answers are paired with a right one.
    """

    n_pos: int = 2
    n_neg: int = 4
    m_max: int = 4
    # Cap on pairs per training step over the whole batch; None = no cap.
    max_pairs_per_step: int | None = None
    # Base seed; the trainer adds the global step so each step draws differently but reproducibly.
    seed: int = 0

    def __post_init__(self) -> None:
        _require(self.n_pos >= 1, f"tapo.selection.n_pos must be >= 1, got {self.n_pos}")
        _require(self.n_neg >= 1, f"tapo.selection.n_neg must be >= 1, got {self.n_neg}")
        _require(self.m_max >= 1, f"tapo.selection.m_max must be >= 1, got {self.m_max}")
        _require(
            self.max_pairs_per_step is None or self.max_pairs_per_step >= 1,
            f"tapo.selection.max_pairs_per_step must be null or >= 1, got {self.max_pairs_per_step}",
        )


@dataclass(frozen=True)
class SynthesisConfig:
    """Synthesis prompts and their generation (section 2 step 3; "anchor" and `prefix_end` are
    section 9's choices)."""

    mode: str = "verbatim"
    # Where the kept part of the wrong answer ends: "after_error" keeps the step that holds the
    # first error, so the reflection follows a mistake the text really made; "before_error" keeps
    # the text up to (not including) that step.
    prefix_end: str = "after_error"
    # A user's own template file (e.g. a short one for a tiny model); None = the built-in template
    # of `mode` and `prefix_end`. It must contain {{question}}, {{wrong_answer}} and {{right_answer}}.
    template_path: str | None = None
    # Token budget of the whole synthesis prompt, chat template included. The rollout engine
    # left-truncates longer prompts, so a prompt is shortened (right answer first) or skipped.
    max_prompt_tokens: int = 16384
    # The right answer is never shortened below this many tokens; the pair is skipped instead.
    min_right_answer_tokens: int = 256
    # Sampling of the synthesis generation.
    temperature: float = 1.0
    top_p: float = 1.0
    # Generation budget of one synthesis output; in verbatim mode it must cover the re-emitted prefix.
    max_new_tokens: int = 4096
    # Deadline of the synthesis round, in seconds after the step's last rollout finished: requests
    # still running then are aborted and counted (tapo/fail/timeout); what finished is kept.
    timeout_s: float = 600.0
    # true: a group's synthesis requests go out as soon as its K rollouts are finished and scored,
    # while other groups still generate; false: one round after the whole rollout.
    stream: bool = True
    # A round in which no request was answered is a failed round (a GRPO step); this many in a row
    # stop the run with their cause.
    max_failed_rounds: int = 3
    # Who writes the synthesis outputs: None = the policy, through the run's rollout servers; else
    # the dotted name of a class built as cls(trainer_config, tokenizer) and called with
    # (requests, timeout_s) (recipe_tapo.workers.synthesis_plan.SynthesisTextSource), e.g. a
    # programmatic teacher for a toy task.
    text_source: str | None = None

    def __post_init__(self) -> None:
        _require_choice(self.mode, SYNTHESIS_MODES, "synthesis.mode")
        _require_choice(self.prefix_end, PREFIX_ENDS, "synthesis.prefix_end")
        _require(
            self.max_prompt_tokens >= 1,
            f"tapo.synthesis.max_prompt_tokens must be >= 1, got {self.max_prompt_tokens}",
        )
        _require(
            self.min_right_answer_tokens >= 0,
            f"tapo.synthesis.min_right_answer_tokens must be >= 0, got {self.min_right_answer_tokens}",
        )
        _require(self.temperature >= 0.0, f"tapo.synthesis.temperature must be >= 0, got {self.temperature}")
        _require(0.0 < self.top_p <= 1.0, f"tapo.synthesis.top_p must be in (0, 1], got {self.top_p}")
        _require(
            self.max_new_tokens >= 1, f"tapo.synthesis.max_new_tokens must be >= 1, got {self.max_new_tokens}"
        )
        _require(self.timeout_s > 0.0, f"tapo.synthesis.timeout_s must be > 0, got {self.timeout_s}")
        _require(
            self.max_failed_rounds >= 1,
            f"tapo.synthesis.max_failed_rounds must be >= 1, got {self.max_failed_rounds}",
        )
        if self.template_path is not None:
            check_template_file(self.template_path)


PACKAGE_PATH_PREFIX = "pkg://"


def resolve_template_path(path: str, key: str = "tapo.synthesis.template_path") -> str:
    """A template file's path on disk. `pkg://<package>/<file>` names a file shipped inside an
    installed package (e.g. `pkg://recipe_tapo.conf/prompts/toy_synthesis_anchor.txt`), so a config
    needs no absolute path; any other value is a plain file path."""
    if not path.startswith(PACKAGE_PATH_PREFIX):
        return path
    package, _, relative = path[len(PACKAGE_PATH_PREFIX) :].partition("/")
    try:
        return str(importlib.resources.files(package).joinpath(relative))
    except ModuleNotFoundError as error:
        raise ValueError(f"{key}: no package {package!r} for {path!r}") from error


def check_template_file(
    path: str, key: str = "tapo.synthesis.template_path", placeholders: tuple[str, ...] = TEMPLATE_PLACEHOLDERS
) -> str:
    """The text of a user's template file (`key` names its config key), or a clear ValueError."""
    _require(bool(path), f"{key} must be null or a file name, got ''")
    path = resolve_template_path(path, key)
    _require(os.path.isfile(path), f"{key}: no such file {path!r}")
    try:
        with open(path, encoding="utf-8") as source:
            template = source.read()
    except (OSError, UnicodeDecodeError) as error:
        raise ValueError(f"{key}: cannot read {path!r} as UTF-8 text: {error}") from error
    missing = ["{{" + name + "}}" for name in placeholders if "{{" + name + "}}" not in template]
    _require(not missing, f"{key}: template {path!r} lacks the placeholders {missing}")
    return template


@dataclass(frozen=True)
class SplicingConfig:
    """Assembly of the trained trajectory from the wrong answer's own ids (section 9)."""

    # A kept prefix shorter than this (in the wrong answer's tokens) makes a "full reconstruction",
    # which the paper's ablation found worse: dropped.
    min_prefix_tokens: int = 32
    # Same, as a fraction of the wrong answer's tokens (0 disables).
    min_prefix_fraction: float = 0.0
    # Move the cut back to the last line break before the departure, not only to a token boundary.
    cut_at_line_boundary: bool = False
    # Drop a construction whose reconstruction leaves the wrong answer inside one of its lines (the
    # copy rewrote part of a line, e.g. its wrong value, instead of going on after it): for answers
    # written a step per line, where that is a silent correction, not a reflection after the mistake.
    # Only under synthesis.prefix_end "after_error": "before_error" drops the mistake by design.
    reject_inside_line_departure: bool = False
    # The corrected continuation must contain this text (its final answer); "" disables the check.
    final_answer_marker: str = "\\boxed"
    # Longest trained response in tokens, EOS included; null = the trainer's data.max_response_length.
    max_response_length: int | None = None
    # The paper's "full reconstruction" ablation: keep none of the wrong answer's ids; the trained
    # response is the model's whole reconstruction, tokenised, + EOS (min_prefix_* do not apply).
    full_reconstruction: bool = False

    def __post_init__(self) -> None:
        _require(
            self.min_prefix_tokens >= 0,
            f"tapo.splicing.min_prefix_tokens must be >= 0, got {self.min_prefix_tokens}",
        )
        _require(
            0.0 <= self.min_prefix_fraction < 1.0,
            f"tapo.splicing.min_prefix_fraction must be in [0, 1), got {self.min_prefix_fraction}",
        )
        _require(
            self.max_response_length is None or self.max_response_length >= 2,
            f"tapo.splicing.max_response_length must be null or >= 2, got {self.max_response_length}",
        )


@dataclass(frozen=True)
class ScoringConfig:
    """Which scored constructions are trained (section 9): every one, or only the correct ones."""

    keep: str = "all"

    def __post_init__(self) -> None:
        _require_choice(self.keep, KEEP_POLICIES, "scoring.keep")


@dataclass(frozen=True)
class AdvantageConfig:
    """Decoupled Advantage Estimation (section 2 step 6, section 9).

    Whether advantages are divided by the group std follows verl's own
    `algorithm.norm_adv_by_std_in_grpo`, so that G_orig matches GRPO under the same setting.
    """

    # G_ref = the constructions of one question ("query") or of the whole batch ("batch").
    ref_group_scope: str = "query"
    # A G_ref whose rewards are all equal (or that has one member): "orig_baseline" normalises its
    # rows with the statistics of the G_orig they were built from; "zero" gives them advantage 0.
    degenerate: str = "orig_baseline"
    # lambda in L = L_GRPO(G_orig) + lambda * L_ref(G_ref).
    ref_loss_weight: float = 1.0
    # Added to G_ref's std only. G_orig always uses verl's GRPO epsilon (the estimator's `epsilon`
    # argument, 1e-6 as compute_grpo_outcome_advantage), so original rows are exactly GRPO's.
    epsilon: float = 1e-6
    # false = the DAE-off ablation: constructed rows join their source group's statistics (one
    # GRPO normalisation over the union of a uid's original and constructed rows, for both).
    decoupled: bool = True
    # "separate": L = L_GRPO(G_orig) + lambda * L_ref(G_ref) as the paper's equation 6 reads, L_GRPO
    # normalised over each mini-batch's original tokens (token-mean) or rows (seq-mean), L_ref over
    # the whole step's constructed ones (recipe_tapo/loss_normalization.py); "joint": verl's one
    # normalisation over every row of the mini-batch, which shrinks the GRPO part by the
    # constructed share.
    loss_normalization: str = "separate"

    def __post_init__(self) -> None:
        _require_choice(self.ref_group_scope, REF_GROUP_SCOPES, "advantage.ref_group_scope")
        _require_choice(self.degenerate, DEGENERATE_POLICIES, "advantage.degenerate")
        _require_choice(self.loss_normalization, LOSS_NORMALIZATIONS, "advantage.loss_normalization")
        _require(
            self.ref_loss_weight > 0.0,
            "tapo.advantage.ref_loss_weight (lambda) must be > 0: with 0 no constructed row can ever "
            f"contribute to the loss (got {self.ref_loss_weight}); set tapo.enable=false instead",
        )
        _require(self.epsilon > 0.0, f"tapo.advantage.epsilon must be > 0, got {self.epsilon}")


@dataclass(frozen=True)
class OtsConfig:
    """OOD Token Suppression (section 2 step 8): w_t = clamp(exp(log p + H), w_min, w_max)."""

    enable: bool = True
    w_min: float = 0.01
    w_max: float = 10.0

    def __post_init__(self) -> None:
        _require(self.w_min > 0.0, f"tapo.ots.w_min must be > 0, got {self.w_min}")
        _require(
            self.w_min <= self.w_max,
            f"tapo.ots.w_min ({self.w_min}) must be <= tapo.ots.w_max ({self.w_max})",
        )


@dataclass(frozen=True)
class DumpConfig:
    """Inspection dumps of the constructions (written by the trainer)."""

    # Dump every N training steps; 0 = never.
    every: int = 0
    # Folder of the dumps; None = the trainer's default folder.
    dir: str | None = None

    def __post_init__(self) -> None:
        _require(self.every >= 0, f"tapo.dump.every must be >= 0 (0 = off), got {self.every}")
        _require(self.dir is None or bool(self.dir), "tapo.dump.dir must be null or a folder name, got ''")


@dataclass(frozen=True)
class TapoConfig:
    """The whole `tapo:` section. Build it with `from_dict` / `from_omegaconf` to reject typos."""

    # false: the TAPO trainer runs plain GRPO (no constructions; the `tapo` estimator equals GRPO).
    enable: bool = True
    selection: SelectionConfig = field(default_factory=SelectionConfig)
    synthesis: SynthesisConfig = field(default_factory=SynthesisConfig)
    splicing: SplicingConfig = field(default_factory=SplicingConfig)
    scoring: ScoringConfig = field(default_factory=ScoringConfig)
    advantage: AdvantageConfig = field(default_factory=AdvantageConfig)
    ots: OtsConfig = field(default_factory=OtsConfig)
    dump: DumpConfig = field(default_factory=DumpConfig)

    def __post_init__(self) -> None:
        # A cap over the batch needs every group's rollouts before the first request goes out.
        _require(
            not (self.synthesis.stream and self.selection.max_pairs_per_step is not None),
            "tapo.selection.max_pairs_per_step needs tapo.synthesis.stream=false: a cap over the whole "
            "batch must see every group before the first synthesis request goes out",
        )
        # Anchor output holds only the correction, never a whole answer to train on its own.
        _require(
            not (self.splicing.full_reconstruction and self.synthesis.mode == "anchor"),
            "tapo.splicing.full_reconstruction=true needs tapo.synthesis.mode=verbatim: anchor output "
            "holds only the correction, not a whole answer to reconstruct",
        )
        # The refusals below concern G_ref, which exists only with decoupled advantages.
        if not self.advantage.decoupled or self.advantage.degenerate != "zero":
            return
        never = "can never give a constructed row a non-zero advantage"
        # With a binary verifier, keeping only correct constructions makes every G_ref all-1s, so
        # every G_ref is degenerate (whatever its scope); "zero" then zeroes every constructed row.
        _require(
            self.scoring.keep != "correct_only",
            f"tapo.scoring.keep=correct_only with tapo.advantage.degenerate=zero {never}: every kept "
            "construction has the same reward, so every G_ref is degenerate and is zeroed. "
            "Use degenerate=orig_baseline or keep=all.",
        )
        # One construction per question: every per-question G_ref has a single row.
        _require(
            not (self.selection.m_max == 1 and self.advantage.ref_group_scope == "query"),
            f"tapo.selection.m_max=1 with tapo.advantage.degenerate=zero and "
            f"tapo.advantage.ref_group_scope=query {never}: every G_ref has one row and is zeroed. "
            "Use degenerate=orig_baseline, ref_group_scope=batch or m_max >= 2.",
        )
        # One construction per step: every G_ref, per question or per batch, has a single row.
        _require(
            self.selection.max_pairs_per_step != 1,
            f"tapo.selection.max_pairs_per_step=1 with tapo.advantage.degenerate=zero {never}: every "
            "G_ref has one row and is zeroed. Use degenerate=orig_baseline or max_pairs_per_step >= 2.",
        )

    @classmethod
    def from_dict(cls, values: Mapping[str, Any] | None) -> TapoConfig:
        """Build from a plain nested mapping (the `tapo:` node); missing keys take defaults.

        Raises:
            ValueError: on an unknown key (named with its full path), a value of the wrong type,
                or an invalid setting.
        """
        return _build_dataclass(cls, values or {}, "tapo")

    @classmethod
    def from_omegaconf(cls, node: Any) -> TapoConfig:
        """Build from an OmegaConf node (e.g. `config.tapo` of the hydra config); None = defaults."""
        from omegaconf import OmegaConf

        if node is None:
            return cls()
        return cls.from_dict(OmegaConf.to_container(node, resolve=True))

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dict of every key, as in `config/tapo_defaults.yaml`."""
        return dataclasses.asdict(self)


OPSD_TEACHERS = ("current", "initial")
OPSD_CONTEXTS = ("reference_then_sibling", "reference", "sibling")
OPSD_TEMPLATE_PLACEHOLDERS = ("question", "context")
OPSD_DEFAULT_TEMPLATE = "pkg://recipe_tapo.conf/prompts/opsd_privileged.txt"


@dataclass(frozen=True)
class OpsdConfig:
    """The `opsd:` section: on-policy self-distillation with a privileged-context self-teacher
    (OPSD, arXiv 2601.18734), the paper's third column (docs/method.md, "OPSD")."""

    # true: each rollout's tokens are also scored under a privileged prompt and the student learns
    # the per-token advantage coef x (log p_teacher - log p_student); needs tapo.enable=false.
    enable: bool = False
    # beta of the sampled-token reverse-KL estimator.
    coef: float = 1.0
    # true: the OPSD term is added to GRPO's outcome advantage; false: OPSD alone.
    outcome_advantage: bool = False
    # current: the policy being trained (the old-log-prob weights of the step); initial: the
    # reference worker's frozen initial weights (verl starts one only with a KL term configured).
    teacher: str = "current"
    # The privileged context: the row's reference solution (`extra_info.solution`), a right
    # sibling from the same group (as SDPO), or the reference solution where the data has one,
    # else a right sibling. Rows with neither get no teacher signal (counted).
    context: str = "reference_then_sibling"
    # The privileged prompt's budget in tokens (a longer one: no teacher signal for that row, counted).
    max_prompt_tokens: int = 2048
    # The privileged user turn, a file with the placeholders {{question}} and {{context}} (pkg:// or a
    # path); None = the built-in config/prompts/opsd_privileged.txt.
    template_path: str | None = None
    # Dump each row's teacher prompt, response and both log-probs every N steps (0 = off), to
    # <dump_dir or trainer.default_local_dir/opsd_dump>/step_NNNNNN.jsonl.
    dump_every: int = 0
    dump_dir: str | None = None

    def __post_init__(self) -> None:
        _require(self.coef >= 0.0, f"opsd.coef must be >= 0, got {self.coef}")
        _require(self.teacher in OPSD_TEACHERS, f"opsd.teacher must be one of {list(OPSD_TEACHERS)}, got {self.teacher!r}")
        _require(self.context in OPSD_CONTEXTS, f"opsd.context must be one of {list(OPSD_CONTEXTS)}, got {self.context!r}")
        _require(self.max_prompt_tokens >= 1, f"opsd.max_prompt_tokens must be >= 1, got {self.max_prompt_tokens}")
        _require(self.dump_every >= 0, f"opsd.dump_every must be >= 0 (0 = off), got {self.dump_every}")
        _require(
            not self.enable or self.coef > 0.0 or self.outcome_advantage,
            "opsd.coef=0 with opsd.outcome_advantage=false trains nothing: every advantage is 0",
        )
        if self.template_path is not None:
            check_template_file(self.template_path, "opsd.template_path", OPSD_TEMPLATE_PLACEHOLDERS)

    def template(self) -> str:
        """The privileged user turn's template text ({{question}} and {{context}} placeholders)."""
        return check_template_file(self.template_path or OPSD_DEFAULT_TEMPLATE, "opsd.template_path", OPSD_TEMPLATE_PLACEHOLDERS)

    @classmethod
    def from_omegaconf(cls, node: Any) -> OpsdConfig:
        """Build from the `opsd:` node of the hydra config (None = defaults); unknown keys refused."""
        from omegaconf import OmegaConf

        if node is None:
            return cls()
        return _build_dataclass(cls, OmegaConf.to_container(node, resolve=True) or {}, "opsd")


def _build_dataclass(cls: type, values: Mapping[str, Any], path: str) -> Any:
    if not isinstance(values, Mapping):
        raise ValueError(f"{path} must be a mapping, got {type(values).__name__}")
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(str(key) for key in values if key not in known)
    if unknown:
        raise ValueError(f"unknown key {path}.{unknown[0]} (known keys of {path}: {sorted(known)})")
    kwargs = {name: _coerce(value, hints[name], f"{path}.{name}") for name, value in values.items()}
    return cls(**kwargs)


def _coerce(value: Any, hint: Any, path: str) -> Any:
    if dataclasses.is_dataclass(hint):
        return _build_dataclass(hint, value if value is not None else {}, path)
    allowed = typing.get_args(hint) if isinstance(hint, types.UnionType) else (hint,)
    if value is None:
        if type(None) in allowed:
            return None
        raise ValueError(f"{path} must not be null")
    # bool is a subclass of int: a yaml `true` must not pass for a count, nor 1 for a switch.
    if isinstance(value, bool):
        if bool in allowed:
            return value
    elif isinstance(value, int) and (int in allowed or float in allowed):
        return value if int in allowed else float(value)
    elif isinstance(value, float) and float in allowed:
        return value
    elif isinstance(value, str) and str in allowed:
        return value
    expected = " or ".join(t.__name__ for t in allowed)
    raise ValueError(f"{path} must be {expected}, got {value!r} ({type(value).__name__})")
