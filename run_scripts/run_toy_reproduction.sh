#!/usr/bin/env bash
# TAPO vs GRPO on the toy task, on CPU, through the recipe's real code (issues 11 and 16):
#   [cold-start rebuild: data -> base SFT (verl's SFT trainer) -> cold-start data (the cold-start
#   builder, programmatic teacher for the synthesis targets) -> cold-start SFT -> a second round of
#   both on fresh training problems, continuing from the first] -> pre-RL measurements
#   of the cold start (solving; its own synthesis on the RL prompts) -> the arms (verl's PPO trainer
#   with the hf rollout; same checkpoint, seeds, steps) -> evaluation on the held-out test set
#   (recipe_tapo.evaluation: Pass@k, DSR, ERR, sampled and greedy) and the forced-prefix recovery
#   probe (recipe_tapo.toy.probe: the cold start's wrong answers on that split, cut after their first
#   wrong line, continued by each checkpoint) -> report.md + plot.png (recipe_tapo.toy.report).
#
#   bash run_scripts/run_toy_reproduction.sh                 # the main comparison, from the shipped cold start, on the ZPD pool
#   ABLATIONS=1 bash run_scripts/run_toy_reproduction.sh     # adds the ablation arms
#   COLD_START=build bash run_scripts/run_toy_reproduction.sh  # rebuild the base and the cold start first (about 3.5 hours)
#   QUICK=1 bash run_scripts/run_toy_reproduction.sh         # every stage in minutes (CI)
#   ARMS=opsd COLD_START=shipped PRE_RL=0 QUICK=1 bash run_scripts/run_toy_reproduction.sh  # one arm, no cold-start stages
#
# Arms: grpo (verl's own loop); tapo (the policy writes its own synthesis); tapo_teacher (the toy's
# programmatic teacher writes every synthesis during RL: an oracle / upper bound, not TAPO); opsd
# (the paper's third column: the same policy, scored under a prompt holding the problem's right
# solution, is the teacher; selected with ARMS, not in the default list).
# ABLATIONS=1 adds tapo_degenerate_zero, tapo_batch_ref, tapo_before_error, tapo_joint_loss, tapo_no_dae,
# tapo_no_ots, tapo_full_reconstruction.
#
# The probe set is built once from the cold start (stage probe_set); every probe stage reads it, so
# rebuilding it means redoing them all (delete their markers too).
# Each finished stage leaves $WORK_DIR/.stages/<stage>.done (holding its wall time in seconds); a
# rerun skips those and resumes at the first unfinished one (delete a marker to redo its stage).
# A fresh WORK_DIR (another machine, a clone) resumes from RESULTS_DIR: the finished measurements and
# runs kept there are skipped, the ZPD pool is rebuilt from its kept counts (recipe_tapo.toy.results
# --restore); RESULTS_DIR records the settings below and refuses a run with others.
# Each stage's output goes to $WORK_DIR/logs/<stage>.log; progress lines go to stdout.
# Environment:
#   WORK_DIR     default outputs/toy_reproduction (QUICK: outputs/toy_reproduction_quick)
#   COLD_START   shipped (default: recipe_tapo/toy/cold_start_model), build (the rebuild stages, in
#                $WORK_DIR; the QUICK default), or the path of an HF folder
#   SEEDS        default "0 1 2" (QUICK: "0");  ARMS: default "grpo tapo tapo_teacher" (or any of
#                the arms above, e.g. "grpo opsd");  ABLATIONS=1
#   RL_STEPS     default 100 (QUICK: 2)
#   EVAL_SPLIT   test (default) or val: where the arms are scored (val for choosing settings: sweeps)
#   RL_EXTRA     extra hydra overrides for every arm (sweeps), e.g. "actor_rollout_ref.actor.optim.lr=1e-4"
#   PRE_RL=0     skip the pre-RL measurements of the cold start (a sweep's later points)
#   ZPD          1 (default; QUICK: 0): train the arms on the paper's ZPD pool, the training problems
#                the cold start solves 1-7 times of 8 (recipe_tapo.data.difficulty_filter, the GPU
#                pipeline's code path); 0: on all of them (the first toy's runs). Use a fresh WORK_DIR
#                when switching it.
#   EXPORT_DIR   where seed 0's final HF checkpoint of each arm is copied (<arm>/); default
#                docs/toy_experiment/checkpoints for a full test-split run with no RL_EXTRA, else
#                $WORK_DIR/export
#   RESULTS_DIR  where the small results (evaluations, probes, metrics, stage times; summaries of the
#                large files: recipe_tapo.toy.results) are kept after every stage, and where the report
#                is built from them alone (every arm and seed evaluated there, other work folders' too);
#                default docs/toy_experiment/comparison for a full test-split run with no RL_EXTRA, else
#                $WORK_DIR/results
#   COMMIT_RESULTS=1  git-commit RESULTS_DIR (inside this repository) after every stage that changes
#                it: a comparison that outlasts its session keeps every finished run
#   UNTIL=<stage>  stop after that stage (e.g. COLD_START=build UNTIL=cold_start_sft)
# It takes no arguments (the settings above are environment variables; RL_EXTRA carries overrides).
# The whole script is one brace group, read before it runs: editing the file during a run is safe.
{
set -euo pipefail
if (($#)); then
    echo "run_toy_reproduction.sh takes no arguments (got: $*): set the environment variables of its header" >&2
    exit 2
fi
cd "$(dirname "$0")/.."
REPO=$(pwd)

QUICK=${QUICK:-0}
ABLATIONS=${ABLATIONS:-0}
EVAL_SPLIT=${EVAL_SPLIT:-test}
RL_EXTRA=${RL_EXTRA:-}
PRE_RL=${PRE_RL:-1}
if [[ "$QUICK" == 1 ]]; then
    WORK_DIR=${WORK_DIR:-$REPO/outputs/toy_reproduction_quick}
    SEEDS=${SEEDS:-0}
    RL_STEPS=${RL_STEPS:-2}
    COLD_START=${COLD_START:-build}
    ZPD=${ZPD:-0}   # QUICK's few-step cold start may solve no training problem 1-3 times of 4
else
    WORK_DIR=${WORK_DIR:-$REPO/outputs/toy_reproduction}
    SEEDS=${SEEDS:-0 1 2}
    RL_STEPS=${RL_STEPS:-100}
    COLD_START=${COLD_START:-shipped}
    ZPD=${ZPD:-1}
fi
ARMS=${ARMS:-grpo tapo tapo_teacher}
if [[ "$ABLATIONS" == 1 ]]; then
    ARMS="$ARMS tapo_degenerate_zero tapo_batch_ref tapo_before_error tapo_joint_loss tapo_no_dae tapo_no_ots"
    ARMS="$ARMS tapo_full_reconstruction"
fi
if [[ "$EVAL_SPLIT" != test && "$EVAL_SPLIT" != val ]]; then
    echo "EVAL_SPLIT must be test or val, got $EVAL_SPLIT" >&2
    exit 2
fi
mkdir -p "$WORK_DIR"
WORK_DIR=$(cd "$WORK_DIR" && pwd)
STATE_DIR="$WORK_DIR/.stages"
LOG_DIR="$WORK_DIR/logs"
mkdir -p "$STATE_DIR" "$LOG_DIR"
if [[ "$QUICK" == 0 && "$EVAL_SPLIT" == test && -z "$RL_EXTRA" ]]; then
    EXPORT_DIR=${EXPORT_DIR:-$REPO/docs/toy_experiment/checkpoints}
    RESULTS_DIR=${RESULTS_DIR:-$REPO/docs/toy_experiment/comparison}
else
    EXPORT_DIR=${EXPORT_DIR:-$WORK_DIR/export}
    RESULTS_DIR=${RESULTS_DIR:-$WORK_DIR/results}
fi
mkdir -p "$RESULTS_DIR"
RESULTS_DIR=$(cd "$RESULTS_DIR" && pwd)
COMMIT_RESULTS=${COMMIT_RESULTS:-0}
if [[ "$COMMIT_RESULTS" == 1 ]] && [[ "$(git -C "$RESULTS_DIR" rev-parse --show-toplevel 2>/dev/null)" != "$REPO" ]]; then
    echo "COMMIT_RESULTS=1 commits RESULTS_DIR to this repository's git, but $RESULTS_DIR is not inside $REPO's work tree" >&2
    exit 2
fi
if [[ "$COMMIT_RESULTS" == 1 ]] && ! git -C "$REPO" var GIT_COMMITTER_IDENT >/dev/null 2>&1; then
    echo "COMMIT_RESULTS=1 commits with git, which has no identity here: set user.name and user.email" >&2
    exit 2
fi
if [[ "$COMMIT_RESULTS" == 1 ]] && git -C "$REPO" check-ignore -q "$RESULTS_DIR"; then
    echo "COMMIT_RESULTS=1 commits RESULTS_DIR, but git ignores $RESULTS_DIR (.gitignore): choose a folder git keeps" >&2
    exit 2
fi
# The exported checkpoints are committed beside the results when git would keep them (the full
# comparison's docs/toy_experiment/checkpoints), not when they sit in the work folder.
COMMIT_EXPORT=0
if [[ "$COMMIT_RESULTS" == 1 ]] && [[ "$(mkdir -p "$EXPORT_DIR" && git -C "$EXPORT_DIR" rev-parse --show-toplevel 2>/dev/null)" == "$REPO" ]] \
    && ! git -C "$REPO" check-ignore -q "$EXPORT_DIR"; then
    COMMIT_EXPORT=1
fi

export VERL_PLATFORM=cpu HF_HUB_OFFLINE=1 WANDB_MODE=disabled RAY_AUTH_MODE=disabled RAY_DEDUP_LOGS=0
export TOKENIZERS_PARALLELISM=false
# One intra-op thread per process. On a shared or busy 2-core machine torch's default (a thread per
# core, OpenMP spinning) is what costs: measured here, sampling 128 tokens took 370 ms a token with 2
# threads beside other work and 6 ms with 1; an SFT step of 32 x 256 tokens 8-30 s against 1.2 s.
# (Ray already gives its workers 1 thread; the SFT trainer and the evaluation run in this shell.)
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} MKL_NUM_THREADS=${MKL_NUM_THREADS:-1}

TOY="$WORK_DIR/toy"
DATA="$TOY/data"
BASE_DIR="$WORK_DIR/checkpoints/base_sft"
COLD_DATA="$WORK_DIR/cold_start"
COLD_DIR="$WORK_DIR/checkpoints/cold_start_sft"
MORE_DATA="$WORK_DIR/cold_start_more"
MORE_DIR="$WORK_DIR/checkpoints/cold_start_more_sft"
RUNS="$WORK_DIR/runs"
EVAL="$WORK_DIR/eval"
PROBE="$EVAL/probe"
ZPD_POOL="$WORK_DIR/zpd/train.parquet"
if [[ "$ZPD" == 1 ]]; then TRAIN_FILE=$ZPD_POOL; else TRAIN_FILE="$DATA/train.parquet"; fi
TEMPLATE="$REPO/config/prompts/toy_synthesis_verbatim.txt"
BEFORE_ERROR_TEMPLATE="$REPO/config/prompts/toy_synthesis_verbatim_before_error.txt"
case $COLD_START in
    shipped) MODEL="$REPO/recipe_tapo/toy/cold_start_model" ;;
    build) MODEL="$MORE_DIR/huggingface" ;;
    *) MODEL=$(cd "$COLD_START" && pwd) ;;
esac

# Sizes. The default column was fixed before any RL run, from the pre-RL measurements and the GRPO
# sweep on the validation split (docs/toy_experiment/COMMAND.md); QUICK only shrinks everything so
# CI runs each stage once.
if [[ "$QUICK" == 1 ]]; then
    BUILD_ARGS=(--train 200 --val 16 --test 16 --sft 400)
    BASE_STEPS=6; BASE_BATCH=16
    MEASURE_N=4
    COLD_LIMIT=24; COLD_SYNTHESIS=40; COLD_SOLUTIONS=16; COLD_PLAIN=32; COLD_PRIVILEGED=16
    COLD_STEPS=3; COLD_BATCH=8; COLD_LR=1e-3
    MORE_ROWS=24; MORE_SYNTHESIS=40; MORE_SOLUTIONS=8; MORE_PLAIN=16; MORE_PRIVILEGED=8; MORE_STEPS=2; MORE_LR=1e-3
    SYNTHESIS_PROBLEMS=16
    EVAL_N=2; EVAL_K=(1 2)
    PROBE_PREFIXES=4; PROBE_SAMPLES=2; PROBE_K=2
    ZPD_K=4
    VAL_RL=8
    RL_SIZE=(data.train_batch_size=4 actor_rollout_ref.actor.ppo_mini_batch_size=4 trainer.test_freq=2)
else
    BUILD_ARGS=()   # build.py's defaults: 1000 test, 500 validation, 4000 training problems, 20000 SFT chats
    # 4000 steps of 32 (6.4 epochs of the SFT file), chosen on the pilots before any RL run
    # (docs/toy_experiment/pilots/): at 2000 steps the base did not yet tie its reflections to its wrong
    # lines (pilot 2); at 4000 it reflects after 11% of its own wrong lines and 6% of right ones, and
    # 62% of those reflections end right (pilot 3, slip rate 0.16); with slips on the hard steps
    # (pilot 4, the build defaults) 25% and 64%. About 55 minutes here.
    BASE_STEPS=4000; BASE_BATCH=32
    MEASURE_N=8
    # The cold start, set on the first toy from the cold-started policy's own synthesis measured before
    # RL (docs/toy_experiment/2026-12-03_first_toy/COMMAND.md, "Pre-RL"): an anchor-mode cold start
    # spliced 26% of requests, 40% of them right -> verbatim mode, the question last in the template,
    # this data and 2400 steps: 67% spliced, 58% right with greedy synthesis. On this toy (pilot 4):
    # 96% of 764 requests spliced, 74% right, but only 27% in TAPO's form (a reflection right where
    # the kept wrong text ends).
    # 1000 chats read a right solution given in the OPSD arm's privileged prompt (recipe_tapo.toy.mix):
    # the first toy's self-teacher, never shown one, was worse than the student (pilot 4's: 88.9%).
    COLD_LIMIT=2000; COLD_SYNTHESIS=4000; COLD_SOLUTIONS=1000; COLD_PLAIN=2000; COLD_PRIVILEGED=1000
    COLD_STEPS=2400; COLD_BATCH=16; COLD_LR=3e-3
    # The second round (pilot 5, docs/toy_experiment/COMMAND.md): the base's rollouts on the 1500
    # training problems after the synthesis measurement's, 1200 more steps at lr 1e-3 from the first
    # round's checkpoint. Written to raise the share in TAPO's form; it did not (28%), but it kept the
    # pool's bars and lifted the self-teacher (91.9%); the guard in profile toy_run does the rest.
    MORE_ROWS=1500; MORE_SYNTHESIS=4000; MORE_SOLUTIONS=500; MORE_PLAIN=1000; MORE_PRIVILEGED=500
    MORE_STEPS=1200; MORE_LR=1e-3
    SYNTHESIS_PROBLEMS=500
    EVAL_N=4; EVAL_K=(1 2 4)
    # One answer of the cold start per problem: about 450 of 1000 test answers are wrong (55.1% sampled
    # accuracy); 200 prefixes of each kind, each continued 4 times (about 40 s per checkpoint).
    PROBE_PREFIXES=200; PROBE_SAMPLES=1; PROBE_K=4
    ZPD_K=8   # the paper's filter: solved 1-7 times of 8
    VAL_RL=32
    RL_SIZE=()
fi
# Lengths (every QUICK setting too: the task is the same). 20 of the 20000 base SFT chats pass 192
# tokens with the chat template (their ends are cut) and 4 solutions pass 160 characters (= tokens), the
# longest 170, so generation stops at 160 as the RL rollouts do (profile toy_run's data.max_response_length).
BASE_MAX_LENGTH=192
GEN_TOKENS=160
# verl's SFT dataset pads every example to max_length, so the SFT step costs in proportion: the
# verbatim examples of the default build are at most 601 tokens (chat template included; 261 of the
# 7000 are longer than 512, which would cut their corrected ending); with slips on the hard steps
# (pilot 4) they reach 647.
COLD_MAX_LENGTH=648

# The TAPO settings the RL runs use (profile toy_run: verbatim mode, budgets, DCS band), so the cold
# start's synthesis prompts are exactly theirs.
PROFILE="profile=[tiny_cpu,toy_run]"
TAPO_SETTINGS=("$PROFILE" "tapo.synthesis.template_path=$TEMPLATE")
# OPSD on the toy: the privileged prompt is the toy's bare problem after its right solution (77-113
# tokens with the chat template); 256 leaves room and fits the start-up check (256 + the 160-token
# responses within the profile's rollout.max_model_len of 1088). The teacher rows of every tenth step
# are dumped to runs/<arm>_s<seed>/opsd_dump/. The cold start's data teaches this template (stage cold_start_data).
OPSD_TEMPLATE=pkg://recipe_tapo.conf/prompts/toy_opsd_privileged.txt
OPSD_SETTINGS="algorithm.adv_estimator=grpo tapo.enable=false opsd.enable=true opsd.max_prompt_tokens=256"
OPSD_SETTINGS="$OPSD_SETTINGS opsd.template_path=$OPSD_TEMPLATE opsd.dump_every=10"

log() { echo "[toy $(date -u +%H:%M:%S)] $*"; }

stop_if_until() {
    if [[ "$1" == "${UNTIL:-}" ]]; then
        log "stopping after stage $1 (UNTIL=$UNTIL)"
        exit 0
    fi
}

# stage NAME COMMAND...: run COMMAND unless NAME's marker exists; the marker holds the wall time.
stage() {
    local name=$1
    shift
    if [[ -f "$STATE_DIR/$name.done" ]]; then
        log "stage $name: done before ($(cat "$STATE_DIR/$name.done")s), skipped"
        stop_if_until "$name"
        return 0
    fi
    log "stage $name: running (log $LOG_DIR/$name.log)"
    local start=$SECONDS rc=0
    # A subshell with errexit of its own (errexit is ignored inside a function called under `if`).
    set +e
    (set -e; "$@") >"$LOG_DIR/$name.log" 2>&1
    rc=$?
    set -e
    if [[ $rc != 0 ]]; then
        log "stage $name: FAILED after $((SECONDS - start))s; last lines of $LOG_DIR/$name.log:"
        tail -n 40 "$LOG_DIR/$name.log"
        exit 1
    fi
    echo "$((SECONDS - start))" >"$STATE_DIR/$name.done"
    log "stage $name: done in $((SECONDS - start))s"
    keep_results "$name"
    stop_if_until "$name"
}

# keep_results STAGE: the work folder's small results to $RESULTS_DIR (recipe_tapo.toy.results), and
# with COMMIT_RESULTS=1 into git at once, so a finished run outlives an interrupted comparison.
keep_results() {
    python -m recipe_tapo.toy.results --work-dir "$WORK_DIR" --results-dir "$RESULTS_DIR" >>"$LOG_DIR/results.log" 2>&1 \
        || { log "saving results after stage $1 FAILED; last lines of $LOG_DIR/results.log:"; tail -n 20 "$LOG_DIR/results.log"; exit 1; }
    if [[ "$COMMIT_RESULTS" == 1 ]]; then
        commit_results "$1"
    fi
}

# commit_results STAGE: commit RESULTS_DIR (and EXPORT_DIR, see COMMIT_EXPORT), those paths only.
# Another git command in this repository may hold its index lock for a moment: retry; a commit that
# still fails leaves the files for the next stage's commit instead of ending hours of runs.
commit_results() {
    local paths=("$RESULTS_DIR") try
    # (git add refuses a path with no files: the export folder stays empty until seed 0's first run ends)
    if [[ "$COMMIT_EXPORT" == 1 && -n "$(ls -A "$EXPORT_DIR" 2>/dev/null)" ]]; then paths+=("$EXPORT_DIR"); fi
    for try in 1 2 3 4 5 6 7 8 9 10; do
        if git -C "$REPO" add -A -- "${paths[@]}" >>"$LOG_DIR/results.log" 2>&1; then
            if git -C "$REPO" diff --cached --quiet -- "${paths[@]}"; then
                return 0
            fi
            if git -C "$REPO" commit -q -m "toy results after stage $1 ($(basename "$WORK_DIR"))" -- "${paths[@]}" \
                >>"$LOG_DIR/results.log" 2>&1; then
                log "results after stage $1 committed (${paths[*]})"
                return 0
            fi
        fi
        sleep $((try * 2))
    done
    log "WARNING: committing the results after stage $1 failed 10 times ($LOG_DIR/results.log has git's words); they stay in $RESULTS_DIR for the next stage's commit"
}

# verl's SFT trainer on CPU (recipe_tapo.cold_start_sft, config cold_start_sft_cpu), fp32 throughout;
# the length is trainer.total_training_steps (epochs only bound it: verl stops at the end of the last epoch).
sft() {
    local out=$1
    shift
    rm -rf "$out"
    python -m recipe_tapo.cold_start_sft --config-name cold_start_sft_cpu \
        data.truncation=right '+engine.mixed_precision={param_dtype:fp32,reduce_dtype:fp32,buffer_dtype:fp32}' \
        optim.lr_scheduler_type=cosine optim.lr_warmup_steps_ratio=0.05 trainer.total_epochs=10 \
        trainer.default_local_dir="$out" "$@"
}

run_data() {
    python -m recipe_tapo.toy.build --out "$TOY" --seed 0 "${BUILD_ARGS[@]}"
    # The RL runs validate on the first $VAL_RL problems of the validation set, the same ones in every
    # run (verl's val_max_samples would draw them by each run's data seed).
    head_rows "$DATA/val.parquet" "$DATA/val_rl.parquet" 0 "$VAL_RL"
    # The cold start's own synthesis is measured on training problems the cold-start data never used.
    head_rows "$DATA/train.parquet" "$DATA/train_synthesis.parquet" "$COLD_LIMIT" "$SYNTHESIS_PROBLEMS"
}

# head_rows IN OUT SKIP COUNT: rows SKIP .. SKIP+COUNT of a parquet file
head_rows() {
    python -c "import pandas as pd, sys; s, n = int(sys.argv[3]), int(sys.argv[4]); pd.read_parquet(sys.argv[1]).iloc[s:s + n].to_parquet(sys.argv[2], index=False)" "$@"
}

run_base_sft() {
    # plain SFT on solutions with slipped steps, half of them caught: the starting skill, the natural mistakes and the habit of reflecting
    sft "$BASE_DIR" model.path="$TOY/model" data.train_files="$DATA/sft.parquet" data.max_length=$BASE_MAX_LENGTH \
        data.train_batch_size=$BASE_BATCH data.micro_batch_size_per_gpu=$BASE_BATCH data.max_token_len_per_gpu=8192 \
        optim.lr=3e-3 trainer.total_training_steps=$BASE_STEPS trainer.save_freq=$BASE_STEPS \
        trainer.experiment_name=toy_base_sft
}

# evaluate MODEL DATA OUT N K...: sampled like the RL rollouts (temperature 1, no top-p), all problems
evaluate() {
    local model=$1 data=$2 out=$3 n=$4
    shift 4
    rm -rf "$out"
    python -m recipe_tapo.evaluation.evaluate --backend hf --model "$model" --data "$data" --out-dir "$out" \
        --n "$n" --k "$@" --temperature 1.0 --top-p 1.0 --max-new-tokens $GEN_TOKENS --seed 0
}

# evaluate_policy MODEL OUT: the arms' evaluation on $EVAL_SPLIT: $EVAL_N samples at temperature 1
# (Pass@k, DSR, ERR) in OUT, one greedy answer per problem in OUT/greedy
evaluate_policy() {
    evaluate "$1" "$DATA/$EVAL_SPLIT.parquet" "$2" $EVAL_N "${EVAL_K[@]}"
    python -m recipe_tapo.evaluation.evaluate --backend hf --model "$1" --data "$DATA/$EVAL_SPLIT.parquet" \
        --out-dir "$2/greedy" --n 1 --k 1 --temperature 0 --max-new-tokens $GEN_TOKENS --seed 0
}

# The probe set: the cold start's answers on $EVAL_SPLIT cut after their first wrong line (and right
# answers cut after a right line, for false alarms); once, so every checkpoint gets the same prefixes.
build_probe_set() {
    mkdir -p "$PROBE"
    python -m recipe_tapo.toy.probe build --model "$MODEL" --data "$DATA/$EVAL_SPLIT.parquet" \
        --out "$PROBE/probe_set.jsonl" --prefixes $PROBE_PREFIXES --samples $PROBE_SAMPLES --max-new-tokens $GEN_TOKENS --seed 0
}

# probe_policy MODEL OUT: MODEL continues every prefix $PROBE_K times, sampled as the evaluation samples
probe_policy() {
    rm -rf "$2"
    python -m recipe_tapo.toy.probe run --model "$1" --probe-set "$PROBE/probe_set.jsonl" --out-dir "$2" \
        --k $PROBE_K --temperature 1.0 --top-p 1.0 --max-new-tokens $GEN_TOKENS --seed 0
}

# The paper's ZPD filter on the RL training pool, by the cold start, sampled as the rollouts
# (temperature 1); the kept rows, and each problem's correct count beside them (.counts.jsonl).
run_zpd_filter() {
    mkdir -p "$(dirname "$ZPD_POOL")"
    python -m recipe_tapo.data.difficulty_filter --backend hf --model "$MODEL" --input "$DATA/train.parquet" \
        --output "$ZPD_POOL" --k $ZPD_K --min-correct 1 --max-correct $((ZPD_K - 1)) --temperature 1.0 --top-p 1.0 \
        --max-new-tokens $GEN_TOKENS --seed 0
    python -c "import pandas as pd, sys; n = len(pd.read_parquet(sys.argv[1])); sys.exit(0 if n else f'the ZPD filter kept no training problem ({sys.argv[1]}): the cold start solves none of them 1-{sys.argv[2]} times of {sys.argv[3]}')" \
        "$ZPD_POOL" $((ZPD_K - 1)) $ZPD_K
}

# cold_start_data BASE INPUT OUT LIMIT SYNTHESIS SOLUTIONS PLAIN PRIVILEGED MIX_SEED: the cold-start
# builder on BASE's own rollouts (K=8) on the first LIMIT problems of INPUT, with the trainer's own
# synthesis prompts (TAPO_SETTINGS) and targets from the programmatic teacher, which knows the first
# wrong step; any mixed group gives pairs here (DCS 1/1: more examples than the RL runs' 2/4 band).
# Mixed with PLAIN solution chats and PRIVILEGED chats in the OPSD arm's prompt (recipe_tapo.toy.mix).
cold_start_data() {
    local base=$1 input=$2 out=$3 limit=$4 synthesis=$5 solutions=$6 plain=$7 privileged=$8 mix_seed=$9
    rm -rf "$out"
    python -m recipe_tapo.cold_start --model "$base" --input "$input" \
        --output-dir "$out" --backend hf --k 8 --limit "$limit" --num-synthesis "$synthesis" \
        --num-solutions "$solutions" --synthesis-source recipe_tapo.toy.teacher.ToyTeacher --seed 0 \
        "${TAPO_SETTINGS[@]}" tapo.selection.n_pos=1 tapo.selection.n_neg=1
    python -m recipe_tapo.toy.mix --cold-start "$out/train.parquet" --sft "$DATA/sft.parquet" \
        --solutions "$plain" --privileged "$privileged" --privileged-template "$OPSD_TEMPLATE" \
        --out "$out/mixed.parquet" --seed "$mix_seed"
}

# cold_start_sft OUT FROM DATA STEPS LR
cold_start_sft() {
    sft "$1" model.path="$2" data.train_files="$3" \
        data.max_length=$COLD_MAX_LENGTH data.train_batch_size=$COLD_BATCH data.micro_batch_size_per_gpu=$COLD_BATCH \
        data.max_token_len_per_gpu=16384 optim.lr="$5" trainer.total_training_steps="$4" \
        trainer.save_freq="$4" trainer.experiment_name="toy_$(basename "$1")"
}

run_cold_start_data() {
    cold_start_data "$BASE_DIR/huggingface" "$DATA/train.parquet" "$COLD_DATA" $COLD_LIMIT $COLD_SYNTHESIS \
        $COLD_SOLUTIONS $COLD_PLAIN $COLD_PRIVILEGED 0
}

run_cold_start_more_data() {
    # training problems neither the first round nor the synthesis measurement (train_synthesis) used
    mkdir -p "$MORE_DATA"
    head_rows "$DATA/train.parquet" "$MORE_DATA/problems.parquet" $((COLD_LIMIT + SYNTHESIS_PROBLEMS)) $MORE_ROWS
    cold_start_data "$BASE_DIR/huggingface" "$MORE_DATA/problems.parquet" "$MORE_DATA/built" $MORE_ROWS \
        $MORE_SYNTHESIS $MORE_SOLUTIONS $MORE_PLAIN $MORE_PRIVILEGED 1
}

measure_synthesis() {
    # The cold-started policy writes the synthesis itself (no --synthesis-source) from its own rollouts on
    # training problems, with the RL runs' prompts, budgets and DCS band: its parse and splice rates and
    # the share of right constructions before any RL step (stats.json, synthesis_records.jsonl).
    rm -rf "$EVAL/pre_rl_synthesis"
    python -m recipe_tapo.cold_start --model "$MODEL" --input "$DATA/train_synthesis.parquet" \
        --output-dir "$EVAL/pre_rl_synthesis" --backend hf --k 8 --num-synthesis 100000 --num-solutions 0 --seed 0 \
        "${TAPO_SETTINGS[@]}"
}

measure_opsd_teacher() {
    # OPSD's self-teacher before RL: the cold start on the validation problems under the OPSD arm's
    # privileged prompt (the problem's right solution in it), sampled as measure_cold_start; a teacher
    # below the student (the first toy's) gives OPSD nothing to learn from.
    python -c "
import sys, pandas as pd
from recipe_tapo.config import OPSD_TEMPLATE_PLACEHOLDERS, check_template_file
from recipe_tapo.opsd import privileged_messages, reference_solution
template = check_template_file(sys.argv[3], 'opsd.template_path', OPSD_TEMPLATE_PLACEHOLDERS)
rows = pd.read_parquet(sys.argv[1])
rows['prompt'] = [privileged_messages([dict(m) for m in p], reference_solution(e), template) for p, e in zip(rows['prompt'], rows['extra_info'])]
rows.to_parquet(sys.argv[2], index=False)" "$DATA/val.parquet" "$DATA/val_privileged.parquet" "$OPSD_TEMPLATE"
    evaluate "$MODEL" "$DATA/val_privileged.parquet" "$EVAL/pre_rl_opsd_teacher" $MEASURE_N 1 2
}

arm_overrides() {
    case $1 in
        grpo) echo "algorithm.adv_estimator=grpo tapo.enable=false" ;;
        tapo) echo "" ;;
        tapo_teacher) echo "tapo.synthesis.text_source=recipe_tapo.toy.teacher.ToyTeacher" ;;
        tapo_degenerate_zero) echo "tapo.advantage.degenerate=zero" ;;
        tapo_batch_ref) echo "tapo.advantage.ref_group_scope=batch" ;;
        tapo_before_error)
            echo "tapo.synthesis.prefix_end=before_error tapo.synthesis.template_path=$BEFORE_ERROR_TEMPLATE" ;;
        tapo_joint_loss) echo "tapo.advantage.loss_normalization=joint" ;;  # one normalisation over all rows
        tapo_no_dae) echo "tapo.advantage.decoupled=false" ;;
        tapo_no_ots) echo "tapo.ots.enable=false" ;;
        tapo_full_reconstruction) echo "tapo.splicing.full_reconstruction=true" ;;
        opsd) echo "$OPSD_SETTINGS" ;;
        *) echo "unknown arm $1" >&2; return 1 ;;
    esac
}

final_hf() { echo "$RUNS/$1_s$2/global_step_$RL_STEPS/actor/huggingface"; }

run_rl() {
    local arm=$1 seed=$2 run="$RUNS/$1_s$2"
    local extra
    extra=$(arm_overrides "$arm")
    rm -rf "$run"
    mkdir -p "$run"
    # shellcheck disable=SC2086  # the arm's overrides and RL_EXTRA are words
    python -m recipe_tapo.main "${TAPO_SETTINGS[@]}" \
        actor_rollout_ref.model.path="$MODEL" \
        data.train_files="$TRAIN_FILE" data.val_files="$DATA/val_rl.parquet" \
        trainer.total_training_steps=$RL_STEPS trainer.save_freq=$RL_STEPS trainer.test_freq=$RL_STEPS \
        trainer.default_local_dir="$run" trainer.experiment_name="$1_s$2" \
        data.seed="$seed" actor_rollout_ref.rollout.seed="$seed" tapo.selection.seed="$seed" \
        tapo.dump.dir="$run/tapo_dump" \
        +ray_kwargs.ray_init.runtime_env.env_vars.VERL_FILE_LOGGER_PATH="$run/metrics.jsonl" \
        "${RL_SIZE[@]}" $extra $RL_EXTRA
    test -f "$(final_hf "$arm" "$seed")/config.json"
}

# export_checkpoint ARM: seed 0's final HF folder (model, config, tokenizer; no optimizer) to $EXPORT_DIR/ARM
export_checkpoint() {
    rm -rf "${EXPORT_DIR:?}/$1"
    mkdir -p "$EXPORT_DIR/$1"
    cp -r "$(final_hf "$1" 0)/." "$EXPORT_DIR/$1/"
}

log "work dir $WORK_DIR (QUICK=$QUICK, cold start: $COLD_START, seeds: $SEEDS, arms: $ARMS, RL steps: $RL_STEPS, scored on: $EVAL_SPLIT, ZPD pool: $ZPD)"
stage data run_data
# What a fresh work folder can take from RESULTS_DIR (nothing on a first run), and the settings that
# must match the results already there.
# The cold start is named by its weights' hash (a rebuilt one by its work folder).
if [[ "$COLD_START" == build ]]; then
    MODEL_ID="built in $WORK_DIR"
else
    MODEL_ID=$(cat "$MODEL"/*.safetensors "$MODEL"/*.bin 2>/dev/null | sha256sum | cut -c1-16 || true)  # one of the globs matches nothing
fi
python -m recipe_tapo.toy.results --restore --work-dir "$WORK_DIR" --results-dir "$RESULTS_DIR" --export-dir "$EXPORT_DIR" \
    --setting "cold_start=$COLD_START" --setting "model=$MODEL_ID" \
    --setting "quick=$QUICK" --setting "eval_split=$EVAL_SPLIT" --setting "zpd=$ZPD" --setting "rl_steps=$RL_STEPS" \
    --setting "rl_extra=$RL_EXTRA" >>"$LOG_DIR/results.log" 2>&1 \
    || { tail -n 3 "$LOG_DIR/results.log" >&2; exit 2; }
log "$(tail -n 1 "$LOG_DIR/results.log")"
# A resumed comparison's ZPD pool: the kept counts re-applied (the same pool, no sampling), and the
# stage's kept wall time (the seconds of re-applying them are not the filter's).
KEPT_COUNTS="$RESULTS_DIR/zpd/$(basename "$ZPD_POOL").counts.jsonl"
if [[ "$ZPD" == 1 && ! -f "$STATE_DIR/zpd_filter.done" && -f "$RESULTS_DIR/.stages/zpd_filter.done" && -f "$KEPT_COUNTS" ]]; then
    mkdir -p "$(dirname "$ZPD_POOL")"
    cp "$KEPT_COUNTS" "$ZPD_POOL.kept_counts.jsonl"
    python -m recipe_tapo.data.difficulty_filter --input "$DATA/train.parquet" --output "$ZPD_POOL" --k $ZPD_K \
        --min-correct 1 --max-correct $((ZPD_K - 1)) --counts-from "$ZPD_POOL.kept_counts.jsonl" >"$LOG_DIR/zpd_pool.log" 2>&1 \
        || { log "rebuilding the ZPD pool from $KEPT_COUNTS FAILED:"; tail -n 5 "$LOG_DIR/zpd_pool.log"; exit 1; }
    cp "$RESULTS_DIR/.stages/zpd_filter.done" "$STATE_DIR/zpd_filter.done"
    log "ZPD pool rebuilt from the kept counts ($LOG_DIR/zpd_pool.log)"
fi
if [[ "$COLD_START" == build ]]; then
    stage base_sft run_base_sft
    stage measure_base evaluate "$BASE_DIR/huggingface" "$DATA/val.parquet" "$EVAL/pre_rl_base" $MEASURE_N 1 2
    stage cold_start_data run_cold_start_data
    stage cold_start_sft cold_start_sft "$COLD_DIR" "$BASE_DIR/huggingface" "$COLD_DATA/mixed.parquet" $COLD_STEPS $COLD_LR
    stage cold_start_more_data run_cold_start_more_data
    stage cold_start_more_sft cold_start_sft "$MORE_DIR" "$COLD_DIR/huggingface" "$MORE_DATA/built/mixed.parquet" $MORE_STEPS $MORE_LR
fi
if [[ "$PRE_RL" == 1 ]]; then
    stage measure_cold_start evaluate "$MODEL" "$DATA/val.parquet" "$EVAL/pre_rl_cold_start" $MEASURE_N 1 2
    stage measure_opsd_teacher measure_opsd_teacher
    stage measure_cold_start_synthesis measure_synthesis
    stage eval_cold_start evaluate_policy "$MODEL" "$EVAL/cold_start"
fi
stage probe_set build_probe_set
if [[ "$PRE_RL" == 1 ]]; then
    stage probe_cold_start probe_policy "$MODEL" "$PROBE/cold_start"
fi
if [[ "$ZPD" == 1 ]]; then
    stage zpd_filter run_zpd_filter
fi
for seed in $SEEDS; do
    for arm in $ARMS; do
        stage "rl_${arm}_s${seed}" run_rl "$arm" "$seed"
        stage "eval_${arm}_s${seed}" evaluate_policy "$(final_hf "$arm" "$seed")" "$EVAL/${arm}_s${seed}"
        stage "probe_${arm}_s${seed}" probe_policy "$(final_hf "$arm" "$seed")" "$PROBE/${arm}_s${seed}"
        if [[ "$seed" == 0 ]]; then
            stage "export_${arm}" export_checkpoint "$arm"
        fi
    done
done
# The report is cheap: always rebuilt, from the kept results alone (what a resumed comparison has).
# It covers every arm and seed evaluated in RESULTS_DIR, this invocation's and those of other work
# folders sharing it, so that runs side by side do not overwrite each other's report.
log "report: building"
keep_results report
python -m recipe_tapo.toy.report --work-dir "$RESULTS_DIR" --arms $ARMS --seeds $SEEDS --add-evaluated \
    --rl-steps "$RL_STEPS" --eval-split "$EVAL_SPLIT" --quick "$QUICK" >"$LOG_DIR/report.log" 2>&1 || { tail -n 40 "$LOG_DIR/report.log"; exit 1; }
log "report: $RESULTS_DIR/report.md, plot: $RESULTS_DIR/plot.png"
exit
}
