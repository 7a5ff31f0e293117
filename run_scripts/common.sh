# Shared by the GPU run scripts: sourced first, as `source "$(dirname "$0")/common.sh"`, not run.
# It remembers the directory the script was called from (relative paths the user gives are read
# against it), moves to the repository root, and sets the defaults every GPU script shares:
#   WORK_DIR   checkpoints, cold-start data, evaluations (default $HOME/tapo_work)
#   DATA_DIR   prepare_data.sh's output, the training and benchmark files (default $HOME/data/tapo)
#   NNODES, GPUS_PER_NODE  the cluster (default 1 node of 8 GPUs); offline generation (difficulty
#              filter, cold-start data, evaluation) runs GPUS_PER_NODE vLLM replicas, one per GPU
# Both folders are made absolute here: on several nodes every worker reads a relative path against
# its own working directory (verl ships no working_dir to the nodes; docs/install.md, Multi-node).
#   DRY_RUN=1  every script checks what it can, lists the files it reads and (under "the files it
#              writes:") those it makes, prints its command and runs nothing; a training script
#              composes and validates the whole config (hydra, verl's checks, TAPO's start-up
#              checks) and starts no Ray.

CALLER_DIR=$(pwd)
cd "$(dirname "${BASH_SOURCE[0]}")/.."

# absolute_path PATH: PATH read against the caller's directory ("~/" expanded).
absolute_path() {
    local path=${1/#\~\//$HOME/}
    if [[ "$path" == /* ]]; then echo "$path"; else echo "$CALLER_DIR/$path"; fi
}

# model_path MODEL: a local folder made absolute; a hub id (owner/name, no such folder here) as it is.
model_path() {
    if [[ ! -e "$1" && "$1" =~ ^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9._-]+$ ]]; then
        echo "$1"
    else
        absolute_path "$1"
    fi
}

# refuse_arguments "$@": for the scripts that take no command-line arguments (settings come from the
# environment), so that an argument meant as an override is not silently dropped.
refuse_arguments() {
    if (($#)); then
        echo "$(basename "$0") takes no arguments (got: $*); its settings are environment variables, listed in its header" >&2
        exit 2
    fi
}

WORK_DIR=$(absolute_path "${WORK_DIR:-$HOME/tapo_work}")
DATA_DIR=$(absolute_path "${DATA_DIR:-$HOME/data/tapo}")
NNODES=${NNODES:-1}
GPUS_PER_NODE=${GPUS_PER_NODE:-8}
# Offline generation on one node, an engine replica per GPU (a later --data-parallel-size or
# --tensor-parallel-size option of the caller wins; their product must fit the node's GPUs).
OFFLINE_GENERATION_ARGS=(--data-parallel-size "$GPUS_PER_NODE")
# The paper's benchmarks: validation during training and the evaluation of a checkpoint.
BENCHMARK_FILES=("$DATA_DIR/aime2024.parquet" "$DATA_DIR/aime2025.parquet" "$DATA_DIR/hmmt2025.parquet")

# run_training EXPERIMENT HYDRA_ARGS...: the recipe's entry point for one named run, printed, then
# run (or checked only, under DRY_RUN=1). Its checkpoints go to $WORK_DIR/checkpoints/EXPERIMENT
# (absolute, so that every node writes to the same folder; a later override wins).
run_training() {
    local args=(trainer.experiment_name="$1" trainer.default_local_dir="$WORK_DIR/checkpoints/$1" "${@:2}")
    printf '+ python -m recipe_tapo.main'
    printf ' %q' "${args[@]}"
    printf '\n'
    if [[ "${DRY_RUN:-0}" == 1 ]]; then
        TAPO_DRY_RUN=1 python -m recipe_tapo.main "${args[@]}"
    else
        python -m recipe_tapo.main "${args[@]}"
    fi
}

# run_evaluation OPTIONS...: recipe_tapo.evaluation.evaluate on MODEL and the benchmarks, printed,
# then run. DRY_RUN=1 parses the options, lists the files read and written (present or missing here)
# and loads no model.
run_evaluation() {
    local args=(--model "$MODEL" --data "${BENCHMARK_FILES[@]}" "${OFFLINE_GENERATION_ARGS[@]}" "$@")
    printf '+ python -m recipe_tapo.evaluation.evaluate'
    printf ' %q' "${args[@]}"
    printf '\n'
    if [[ "${DRY_RUN:-0}" != 1 ]]; then
        python -m recipe_tapo.evaluation.evaluate "${args[@]}"
        return
    fi
    python - "${args[@]}" <<'PY'
import os, sys
from recipe_tapo.evaluation.evaluate import parse_args
args = parse_args(sys.argv[1:])
state = lambda path: "present" if os.path.exists(os.path.expanduser(path)) else "missing here"
print("DRY RUN: the evaluation options parse; no model loaded.")
print(f"  --max-new-tokens {args.max_new_tokens}, --chat-template-kwargs {args.chat_template_kwargs}, "
      f"--n {args.n}, --temperature {args.temperature}, --top-p {args.top_p}, "
      f"--data-parallel-size {args.data_parallel_size}, --tensor-parallel-size {args.tensor_parallel_size}")
print(f"  --model: {args.model} ({state(args.model)})")
for path in args.data:
    print(f"  --data: {path} ({state(path)})")
print("the files it writes:")
for name in ("eval_results.json", "eval_results.md", "samples.jsonl"):
    path = os.path.join(args.out_dir, name)
    print(f"  {path} ({state(path)})")
PY
}

# evaluate_as_trained [OPTIONS...]: run_evaluation of MODEL sampled as the model's settings file (sourced
# before) trains and validates: its chat-template kwargs, prompt and response lengths, and the
# validation's samples, temperature and top-p. Results in OUT_DIR (default $WORK_DIR/eval/<model folder>).
evaluate_as_trained() {
    OUT_DIR=$(absolute_path "${OUT_DIR:-$WORK_DIR/eval/$(basename "$MODEL")}")
    run_evaluation --out-dir "$OUT_DIR" --chat-template-kwargs "$CHAT_TEMPLATE_KWARGS" \
        --max-new-tokens "$RESPONSE_LENGTH" --max-prompt-tokens "$PROMPT_LENGTH" \
        --n "$VAL_SAMPLES" --temperature "$VAL_TEMPERATURE" --top-p "$VAL_TOP_P" "$@"
}

# wandb when it is configured (WANDB_API_KEY, or a `wandb login` in ~/.netrc), else the console
# only, so that a first run never stops at a login prompt.
default_logger() {
    if [[ -n "${WANDB_API_KEY:-}" ]] || grep -qs "api.wandb.ai" "$HOME/.netrc"; then
        echo "[console,wandb]"
    else
        echo "[console]"
    fi
}

# list_files HEADING PATH...: the heading, then one path a line, present or missing here (under
# DRY_RUN=1 a script lists the files it reads, and under "the files it writes:" those it makes).
list_files() {
    local path
    echo "$1"
    for path in "${@:2}"; do
        if [[ -e "$path" ]]; then echo "  $path (present)"; else echo "  $path (missing here)"; fi
    done
}
