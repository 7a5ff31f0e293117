#!/usr/bin/env bash
# The whole reproduction on GPUs (Qwen3-8B non-thinking, the paper's setting), stage by stage:
#   data -> difficulty filter -> cold-start data -> cold-start SFT -> GRPO -> TAPO -> OPSD (all three
#   from the SFT checkpoint) -> merge each to HF -> evaluate each -> one markdown table beside the
#   paper's numbers.
#   [DRY_RUN=1] bash run_scripts/reproduce.sh
# It takes no arguments: every stage reads run_scripts/qwen3_8b_settings.sh, so a setting changed
# there reaches the filter, the cold start, the runs and the evaluation alike (an override given to
# one stage only would make them disagree). To try a hydra override, run that stage's script.
# Each finished stage leaves a marker $WORK_DIR/.stages/<stage>.done; a rerun skips those and resumes
# at the first unfinished one (delete a marker to redo its stage; verl's trainers also resume their
# own checkpoints). Before the first unfinished stage the GPU environment is checked
# (run_scripts/check_env.sh, with its MIN_FREE_GB). A stage whose input file is missing stops with
# the file's name.
# DRY_RUN=1 prints every stage in order, done or pending, with its inputs and command, and runs
# nothing (the environment check only reports).
# Environment:
#   WORK_DIR, DATA_DIR, NNODES, GPUS_PER_NODE (common.sh: $HOME/tapo_work, $HOME/data/tapo, 1, 8)
#   BASE_MODEL (qwen3_8b_settings.sh: Qwen/Qwen3-8B); TEACHER (optional: a stronger model writes the
#   cold-start synthesis targets); NUM_SOLUTIONS / NUM_SYNTHESIS (default 30000 / 15000, the paper's);
#   MIN_FREE_GB (check_env.sh); SKIP_ENV_CHECK=1 skips the environment check (a stage run off the GPU
#   machine, e.g. the table)
set -euo pipefail
source "$(dirname "$0")/common.sh"
refuse_arguments "$@"
# The RL runs' settings: the filter, the cold-start synthesis prompts and the evaluation follow them.
source run_scripts/qwen3_8b_settings.sh

TEACHER=${TEACHER:-}
NUM_SOLUTIONS=${NUM_SOLUTIONS:-30000}
NUM_SYNTHESIS=${NUM_SYNTHESIS:-15000}
STATE_DIR="$WORK_DIR/.stages"
export WORK_DIR DATA_DIR NNODES GPUS_PER_NODE BASE_MODEL

SOURCE_FILE="$DATA_DIR/deepscaler_train.parquet"
ZPD_FILE="$TRAIN_FILE"
SFT_DIR="$WORK_DIR/checkpoints/$COLD_START_SFT_NAME"
SFT_HF="$SFT_DIR/huggingface"
RL_DIR="$WORK_DIR/checkpoints"
HF_DIR="$WORK_DIR/hf"
EVAL_DIR="$WORK_DIR/eval"
DRY=${DRY_RUN:-0}
ENV_CHECKED=0

# The last checkpoint's actor of a verl RL run, merged into an HF folder by verl's model merger.
merge_actor() {
    local run_dir=$1 target=$2 tracker="$1/latest_checkpointed_iteration.txt"
    [[ -f "$tracker" ]] || { echo "merge: $tracker: no checkpoint tracker (did the run save?)" >&2; return 1; }
    python -m verl.model_merger merge --backend fsdp \
        --local_dir "$run_dir/global_step_$(cat "$tracker")/actor" --target_dir "$target"
}

# stage NAME "INPUT FILES" COMMAND...: run COMMAND unless NAME's marker exists; mark it when it succeeds.
stage() {
    local name=$1 inputs=$2
    shift 2
    local marker="$STATE_DIR/$name.done" path
    if [[ -f "$marker" ]]; then
        echo "== stage $name: done ($marker)"
        return 0
    fi
    if [[ "$DRY" == 1 ]]; then
        echo "== stage $name: pending"
        for path in $inputs; do
            if [[ -e "$path" ]]; then echo "   needs $path (present)"; else echo "   needs $path (missing here; an earlier stage makes it)"; fi
        done
        printf '   +'; printf ' %q' "$@"; printf '\n'
        return 0
    fi
    if [[ "$ENV_CHECKED" == 0 && "${SKIP_ENV_CHECK:-0}" != 1 ]]; then
        echo "== environment check before stage $name"
        bash run_scripts/check_env.sh
        ENV_CHECKED=1
    fi
    for path in $inputs; do
        if [[ ! -e "$path" ]]; then
            echo "stage $name: missing input $path" >&2
            exit 1
        fi
    done
    echo "== stage $name: running"
    printf '+'; printf ' %q' "$@"; printf '\n'
    if ! "$@"; then
        echo "stage $name failed; fix it and rerun: finished stages are skipped" >&2
        exit 1
    fi
    mkdir -p "$STATE_DIR"
    date -u +%FT%TZ > "$marker"
}

if [[ "$DRY" == 1 ]]; then
    echo "DRY RUN: the stages in order (markers in $STATE_DIR); nothing runs."
    bash run_scripts/check_env.sh
fi

TEACHER_ARGS=()
[[ -n "$TEACHER" ]] && TEACHER_ARGS=(--teacher "$TEACHER")

stage data "" bash run_scripts/prepare_data.sh
stage filter "$SOURCE_FILE" bash run_scripts/filter_qwen3_8b.sh
stage cold_start_data "$SOURCE_FILE" python -m recipe_tapo.cold_start --model "$BASE_MODEL" "${TEACHER_ARGS[@]}" \
    --input "$SOURCE_FILE" --output-dir "$COLD_START_DATA_DIR" --k "$GROUP_SIZE" "${OFFLINE_GENERATION_ARGS[@]}" \
    --num-solutions "$NUM_SOLUTIONS" --num-synthesis "$NUM_SYNTHESIS" \
    "${QWEN3_8B_ARGS[@]}" "${QWEN3_8B_TAPO_ARGS[@]}"
stage sft "$COLD_START_DATA_DIR/train.parquet" env SFT_DATA="$COLD_START_DATA_DIR/train.parquet" OUT_DIR="$SFT_DIR" \
    bash run_scripts/run_cold_start_sft.sh
stage grpo "$SFT_HF $ZPD_FILE" env MODEL="$SFT_HF" TRAIN_FILE="$ZPD_FILE" \
    bash run_scripts/run_grpo_qwen3_8b.sh trainer.default_local_dir="$RL_DIR/grpo_qwen3_8b"
stage tapo "$SFT_HF $ZPD_FILE" env MODEL="$SFT_HF" TRAIN_FILE="$ZPD_FILE" \
    bash run_scripts/run_tapo_qwen3_8b.sh trainer.default_local_dir="$RL_DIR/tapo_qwen3_8b"
stage opsd "$SFT_HF $ZPD_FILE" env MODEL="$SFT_HF" TRAIN_FILE="$ZPD_FILE" \
    bash run_scripts/run_opsd_qwen3_8b.sh trainer.default_local_dir="$RL_DIR/opsd_qwen3_8b"
stage merge_grpo "$RL_DIR/grpo_qwen3_8b" merge_actor "$RL_DIR/grpo_qwen3_8b" "$HF_DIR/grpo_qwen3_8b"
stage merge_tapo "$RL_DIR/tapo_qwen3_8b" merge_actor "$RL_DIR/tapo_qwen3_8b" "$HF_DIR/tapo_qwen3_8b"
stage merge_opsd "$RL_DIR/opsd_qwen3_8b" merge_actor "$RL_DIR/opsd_qwen3_8b" "$HF_DIR/opsd_qwen3_8b"
stage eval_grpo "$HF_DIR/grpo_qwen3_8b ${BENCHMARK_FILES[*]}" env MODEL="$HF_DIR/grpo_qwen3_8b" OUT_DIR="$EVAL_DIR/grpo" \
    bash run_scripts/eval_qwen3_8b.sh
stage eval_tapo "$HF_DIR/tapo_qwen3_8b ${BENCHMARK_FILES[*]}" env MODEL="$HF_DIR/tapo_qwen3_8b" OUT_DIR="$EVAL_DIR/tapo" \
    bash run_scripts/eval_qwen3_8b.sh
stage eval_opsd "$HF_DIR/opsd_qwen3_8b ${BENCHMARK_FILES[*]}" env MODEL="$HF_DIR/opsd_qwen3_8b" OUT_DIR="$EVAL_DIR/opsd" \
    bash run_scripts/eval_qwen3_8b.sh
stage table "$EVAL_DIR/grpo/eval_results.json $EVAL_DIR/tapo/eval_results.json $EVAL_DIR/opsd/eval_results.json" \
    python -m recipe_tapo.reproduction_table --run GRPO="$EVAL_DIR/grpo/eval_results.json" \
    --run TAPO="$EVAL_DIR/tapo/eval_results.json" --run OPSD="$EVAL_DIR/opsd/eval_results.json" \
    --out "$WORK_DIR/results.md"

if [[ "$DRY" != 1 ]]; then
    echo "== all stages done; the table: $WORK_DIR/results.md"
    cat "$WORK_DIR/results.md"
fi
