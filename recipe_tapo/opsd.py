"""OPSD: on-policy self-distillation with a privileged-context self-teacher (arXiv 2601.18734), the
TAPO paper's third column (docs/method.md, "OPSD").

One model is the student, pi(. | x), and the teacher, pi(. | x, c), where c is privileged context
(a reference solution, or a right answer from the same group). Each rollout's response tokens are
scored a second time under the privileged prompt, and the student is trained on its own samples
with the sampled-token estimator of the reverse KL to the teacher: the per-token advantage
coef x (log p_teacher(y_t) - log p_student(y_t)), optionally added to GRPO's outcome advantage.

Here are the pure parts (no Ray): which context each row gets, the privileged prompt, the teacher
rows in verl's batch layout, the advantage and the metrics. The trainer runs the teacher pass in
its `_compute_old_log_prob` seam and sets the advantages in `_update_actor` (recipe_tapo/trainer.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from verl import DataProto
from verl.utils.model import compute_position_id_with_mask

from recipe_tapo.config import OpsdConfig
from recipe_tapo.workers.batch_rows import pad_token_id
from recipe_tapo.workers.synthesis_plan import question_text, response_ids, row_correctness

REFERENCE = "reference"
SIBLING = "sibling"
NO_CONTEXT = "none"
PROMPT_TOO_LONG = "prompt_too_long"
# Batch keys the trainer keeps between the teacher pass and the update (never sent to a worker).
TEACHER_LOG_PROBS = "opsd_teacher_log_probs"
HAS_TEACHER = "opsd_has_teacher"


def reference_solution(extra_info: Any) -> str | None:
    """The row's reference solution (`extra_info.solution`), or None where the data has none."""
    if not isinstance(extra_info, dict):
        return None
    solution = extra_info.get("solution")
    return solution if isinstance(solution, str) and solution.strip() else None


def choose_contexts(
    uids: Sequence[Any], correct: np.ndarray, references: Sequence[str | None], policy: str
) -> list[tuple[str, int | None]]:
    """Per row, where its privileged context comes from: (REFERENCE, None), (SIBLING, row of a right
    answer to the same prompt, never the row itself: the first such row in batch order), or
    (NO_CONTEXT, None).

    Args:
        uids: shape (bs,), the prompt group of each row.
        correct: shape (bs,), bool.
        references: shape (bs,), each row's reference solution or None.
        policy: `opsd.context` (reference_then_sibling, reference or sibling).
    """
    right_rows: dict[Any, list[int]] = {}
    for row, (uid, right) in enumerate(zip(uids, correct, strict=True)):
        if right:
            right_rows.setdefault(uid, []).append(row)
    chosen = []
    for row, uid in enumerate(uids):
        if policy != SIBLING and references[row] is not None:
            chosen.append((REFERENCE, None))
            continue
        sibling = next((other for other in right_rows.get(uid, []) if other != row), None)
        if policy != REFERENCE and sibling is not None:
            chosen.append((SIBLING, sibling))
        else:
            chosen.append((NO_CONTEXT, None))
    return chosen


def privileged_messages(raw_prompt: Any, context: str, template: str) -> list[dict[str, Any]]:
    """The row's chat with its last user turn replaced by `template` filled with that turn's text
    ({{question}}) and the privileged context ({{context}}); every other turn as it was."""
    question = question_text(raw_prompt)
    messages = [dict(message) for message in raw_prompt]
    last_user = max(index for index, message in enumerate(messages) if message.get("role") == "user")
    messages[last_user]["content"] = template.replace("{{question}}", question).replace("{{context}}", context)
    return messages


@dataclass
class TeacherRows:
    """The teacher pass's input: one row per batch row (verl's layout), the rows that have a teacher
    signal, and where each row's context came from (REFERENCE, SIBLING, NO_CONTEXT, PROMPT_TOO_LONG)."""

    rows: DataProto
    has_teacher: np.ndarray
    sources: list[str]
    prompt_ids: list[list[int]]


def build_teacher_rows(
    batch: DataProto, tokenizer: Any, config: OpsdConfig, chat_template_kwargs: dict, eos_token_ids: Sequence[int]
) -> TeacherRows:
    """Every row's response under its privileged prompt, in verl's left-padded prompt / right-padded
    response layout, ready for the actor's log-prob pass. A row without context, or whose privileged
    prompt exceeds `config.max_prompt_tokens`, keeps its own prompt (its teacher equals its student)
    and is marked as having no teacher signal."""
    # the reward loop scored every row (`rm_scores`) before the old-log-prob pass
    correct = row_correctness(batch, batch.batch["rm_scores"].sum(dim=-1))
    extra = batch.non_tensor_batch.get("extra_info")
    references = [reference_solution(extra[row]) if extra is not None else None for row in range(len(batch))]
    contexts = choose_contexts(batch.non_tensor_batch["uid"], correct, references, config.context)
    template = config.template()
    own_prompts = _own_prompt_ids(batch)
    prompt_ids, sources = [], []
    for row, (source, sibling) in enumerate(contexts):
        if source == NO_CONTEXT:
            prompt_ids.append(own_prompts[row])
            sources.append(source)
            continue
        context = references[row] if source == REFERENCE else _answer_text(batch, sibling, tokenizer, eos_token_ids)
        messages = privileged_messages(batch.non_tensor_batch["raw_prompt"][row], context, template)
        text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False, **chat_template_kwargs)
        ids = tokenizer.encode(text, add_special_tokens=False)
        if len(ids) > config.max_prompt_tokens:
            prompt_ids.append(own_prompts[row])
            sources.append(PROMPT_TOO_LONG)
        else:
            prompt_ids.append(ids)
            sources.append(source)
    has_teacher = np.array([source in (REFERENCE, SIBLING) for source in sources], dtype=bool)
    rows = _rows_with_prompts(batch, prompt_ids, pad_token_id(tokenizer))
    return TeacherRows(rows=rows, has_teacher=has_teacher, sources=sources, prompt_ids=prompt_ids)


def opsd_advantages(
    teacher_log_probs: torch.Tensor,
    student_log_probs: torch.Tensor,
    response_mask: torch.Tensor,
    has_teacher: np.ndarray,
    coef: float,
) -> torch.Tensor:
    """The sampled-token reverse-KL advantage: coef x (log p_teacher - log p_student) on every
    response token of a row with a teacher signal, 0 elsewhere: the per-token form of on-policy
    distillation, each token pushed by its own gap (the exact gradient of the sequence-level
    KL(student || teacher) would also credit it with the gaps of the tokens after it).

    Args:
        teacher_log_probs, student_log_probs: shape (bs, response_length), of the sampled tokens.
        response_mask: shape (bs, response_length).
        has_teacher: shape (bs,), bool.
        coef: beta.

    Returns:
        shape (bs, response_length), float32.
    """
    rows = torch.as_tensor(np.asarray(has_teacher, dtype=bool)).unsqueeze(-1)
    gap = (teacher_log_probs - student_log_probs).float()
    return coef * gap * response_mask.float() * rows


def opsd_metrics(
    teacher_log_probs: torch.Tensor,
    student_log_probs: torch.Tensor,
    response_mask: torch.Tensor,
    has_teacher: np.ndarray,
    sources: Sequence[str],
    advantages: torch.Tensor,
) -> dict[str, float]:
    """`opsd/` metrics of a step: the k1 estimate of KL(student || teacher) per token (mean of
    log p_student - log p_teacher on the sampled tokens of rows with a teacher), the share of rows
    by context source, and the statistics of the trained advantage on those tokens."""
    rows = torch.as_tensor(np.asarray(has_teacher, dtype=bool))
    mask = response_mask.bool() & rows.unsqueeze(-1)
    count = len(sources)
    metrics = {
        f"opsd/context/{name}": sum(source == name for source in sources) / max(count, 1)
        for name in (REFERENCE, SIBLING, NO_CONTEXT, PROMPT_TOO_LONG)
    }
    metrics["opsd/teacher_row_share"] = float(rows.float().mean()) if count else 0.0
    if mask.any():
        gap = (student_log_probs - teacher_log_probs)[mask].double()
        trained = advantages[mask].double()
        metrics.update({
            "opsd/kl_estimate": float(gap.mean()),
            "opsd/advantage_mean": float(trained.mean()),
            "opsd/advantage_std": float(trained.std()) if trained.numel() > 1 else 0.0,
            "opsd/advantage_min": float(trained.min()),
            "opsd/advantage_max": float(trained.max()),
        })
    return metrics


def _answer_text(batch: DataProto, row: int, tokenizer: Any, eos_token_ids: Sequence[int]) -> str:
    return tokenizer.decode(response_ids(batch, row, eos_token_ids), skip_special_tokens=True)


def _own_prompt_ids(batch: DataProto) -> list[list[int]]:
    prompts = batch.batch["prompts"]
    mask = batch.batch["attention_mask"][:, : prompts.shape[1]].bool()
    return [prompts[row][mask[row]].tolist() for row in range(len(batch))]


def _rows_with_prompts(batch: DataProto, prompt_ids: Sequence[Sequence[int]], pad_token_id: int) -> DataProto:
    """`batch`'s responses under new prompts, left-padded to the longest: the tensors verl's
    log-prob pass reads (input ids, masks, position ids, responses)."""
    if batch.batch["position_ids"].dim() != 2:
        raise ValueError("OPSD's teacher rows support text-only position ids (batch, seq), not multi-modal rope")
    width = max(len(ids) for ids in prompt_ids)
    prompts = torch.full((len(batch), width), pad_token_id, dtype=batch.batch["prompts"].dtype)
    prompt_mask = torch.zeros((len(batch), width), dtype=batch.batch["attention_mask"].dtype)
    for row, ids in enumerate(prompt_ids):
        if ids:
            prompts[row, width - len(ids):] = torch.as_tensor(list(ids), dtype=prompts.dtype)
            prompt_mask[row, width - len(ids):] = 1
    response_width = batch.batch["responses"].shape[1]
    response_attention = batch.batch["attention_mask"][:, -response_width:]
    attention_mask = torch.cat([prompt_mask, response_attention], dim=1)
    tensors = {
        "prompts": prompts,
        "responses": batch.batch["responses"],
        "response_mask": batch.batch["response_mask"],
        "input_ids": torch.cat([prompts, batch.batch["responses"]], dim=1),
        "attention_mask": attention_mask,
        "position_ids": compute_position_id_with_mask(attention_mask).to(batch.batch["position_ids"].dtype),
    }
    return DataProto.from_dict(tensors=tensors, meta_info=dict(batch.meta_info))

