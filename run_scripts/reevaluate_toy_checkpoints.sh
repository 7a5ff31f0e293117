#!/usr/bin/env bash
# The toy comparison's committed checkpoints (docs/toy_experiment/checkpoints/<arm>/, seed 0 of each
# arm) re-evaluated on problems drawn anew, against the Pass@1 the comparison's report gives them
# (recipe_tapo.toy.fresh). CPU, no Ray:
#
#   bash run_scripts/reevaluate_toy_checkpoints.sh            # every committed checkpoint, 1000 problems x 4
#   ARMS="grpo tapo" QUICK=1 bash run_scripts/reevaluate_toy_checkpoints.sh
#
# Environment:
#   ARMS         default: every folder of CHECKPOINTS holding a model
#   CHECKPOINTS  default docs/toy_experiment/checkpoints;  RESULTS_DIR  default docs/toy_experiment/comparison
#   SEEDS        the report's seeds, default "0 1 2";  FRESH_SEED  default 1 (the toy's splits are seed 0's)
#   WORK_DIR     default outputs/toy_fresh (an arm evaluated there before is not evaluated again)
#   QUICK=1      16 problems x 2 samples (a smoke run; its table says nothing)
# Writes WORK_DIR/eval/<arm>/ and, unless QUICK, RESULTS_DIR/fresh/ (README.md, each arm's
# eval_results.json, seen.json, fresh_summary.json).
set -euo pipefail
if (($#)); then
    echo "reevaluate_toy_checkpoints.sh takes no arguments (got: $*): set the environment variables of its header" >&2
    exit 2
fi
cd "$(dirname "$0")/.."
REPO=$(pwd)
QUICK=${QUICK:-0}
CHECKPOINTS=${CHECKPOINTS:-$REPO/docs/toy_experiment/checkpoints}
RESULTS_DIR=${RESULTS_DIR:-$REPO/docs/toy_experiment/comparison}
SEEDS=${SEEDS:-0 1 2}
FRESH_SEED=${FRESH_SEED:-1}
WORK_DIR=${WORK_DIR:-$REPO/outputs/toy_fresh}
# The comparison's evaluation settings (run_toy_reproduction.sh: EVAL_N, EVAL_K, GEN_TOKENS)
if [[ "$QUICK" == 1 ]]; then COUNT=16; N=2; K=(1 2); else COUNT=1000; N=4; K=(1 2 4); fi
GEN_TOKENS=160
if [[ -z "${ARMS:-}" ]]; then
    ARMS=$(for dir in "$CHECKPOINTS"/*/; do [[ -f "$dir/config.json" ]] && basename "$dir"; done | tr '\n' ' ')
fi
if [[ -z "$ARMS" ]]; then
    echo "no checkpoint in $CHECKPOINTS (a folder with config.json per arm)" >&2
    exit 2
fi
for arm in $ARMS; do
    if [[ ! -f "$CHECKPOINTS/$arm/config.json" ]]; then
        echo "$CHECKPOINTS/$arm is not a checkpoint folder (no config.json)" >&2
        exit 2
    fi
done
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} MKL_NUM_THREADS=${MKL_NUM_THREADS:-1}
log() { echo "[fresh $(date +%H:%M:%S)] $*"; }
mkdir -p "$WORK_DIR/eval"

# Every problem the checkpoints could have met: the toy build's RL splits and SFT chats (seed 0, the
# comparison's sizes); the cold-start chats are written on its training problems.
if [[ ! -f "$WORK_DIR/toy/data/sft.parquet" ]]; then
    log "building the toy's data (seed 0) to know which problems were seen"
    python -m recipe_tapo.toy.build --out "$WORK_DIR/toy" --seed 0 >"$WORK_DIR/build.log" 2>&1 \
        || { tail -n 20 "$WORK_DIR/build.log"; exit 1; }
fi
python -m recipe_tapo.toy.fresh problems --out "$WORK_DIR/eval" --seed "$FRESH_SEED" --count $COUNT \
    --seen "$WORK_DIR"/toy/data/{train,val,test,sft}.parquet
for arm in $ARMS; do
    out="$WORK_DIR/eval/$arm"
    if [[ -f "$out/eval_results.json" && -f "$out/samples.jsonl" ]]; then
        log "$arm: evaluated before, kept"
        continue
    fi
    log "$arm: evaluating $CHECKPOINTS/$arm on $COUNT fresh problems x $N (log $WORK_DIR/$arm.log)"
    start=$(date +%s)
    python -m recipe_tapo.evaluation.evaluate --backend hf --model "$CHECKPOINTS/$arm" --data "$WORK_DIR/eval/fresh.parquet" \
        --out-dir "$out.partial" --n $N --k "${K[@]}" --temperature 1.0 --top-p 1.0 --max-new-tokens $GEN_TOKENS --seed 0 \
        >"$WORK_DIR/$arm.log" 2>&1 || { tail -n 20 "$WORK_DIR/$arm.log"; exit 1; }
    rm -rf "$out" && mv "$out.partial" "$out"
    log "$arm: done in $(($(date +%s) - start))s"
done
python -m recipe_tapo.toy.fresh compare --results-dir "$RESULTS_DIR" --fresh-eval-dir "$WORK_DIR/eval" --arms $ARMS \
    --seeds $SEEDS --out "$WORK_DIR/README.md"
if [[ "$QUICK" != 1 ]]; then
    mkdir -p "$RESULTS_DIR/fresh"
    cp "$WORK_DIR/README.md" "$WORK_DIR/eval/seen.json" "$WORK_DIR/eval/fresh_summary.json" "$RESULTS_DIR/fresh/"
    for arm in $ARMS; do
        mkdir -p "$RESULTS_DIR/fresh/$arm" && cp "$WORK_DIR/eval/$arm/eval_results.json" "$RESULTS_DIR/fresh/$arm/"
    done
    log "table: $RESULTS_DIR/fresh/README.md"
fi
