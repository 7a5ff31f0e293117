#!/usr/bin/env bash
# Download and convert every dataset of the reproduction into verl parquet files:
#   deepscaler_train.parquet, dapo_math_17k_train.parquet (RL), math500.parquet (validation),
#   aime2024.parquet, aime2025.parquet, hmmt2025.parquet (benchmarks).
#   [DRY_RUN=1] bash run_scripts/prepare_data.sh [recipe_tapo.data.prepare options, e.g. --limit N]
# Environment: DATA_DIR (default $HOME/data/tapo, common.sh). Keep it outside the repository: some of
# these datasets carry non-commercial licences (see each dataset card) and none of them is committed.
# DRY_RUN=1 prints the command and the files it writes (present or missing here); nothing downloads.
# One source from a local copy instead of the hub:
#   python -m recipe_tapo.data.prepare --source aime2025 --local aime_2025.jsonl --out "$DATA_DIR/aime2025.parquet"
set -euo pipefail
source "$(dirname "$0")/common.sh"

OUTPUTS=()
for name in deepscaler_train dapo_math_17k_train math500 aime2024 aime2025 hmmt2025; do
    OUTPUTS+=("$DATA_DIR/$name.parquet")
done

printf '+ python -m recipe_tapo.data.prepare --source all --out-dir %q' "$DATA_DIR"
for arg in "$@"; do printf ' %q' "$arg"; done   # (printf ' %q' with no argument would print '')
printf '\n'
if [[ "${DRY_RUN:-0}" == 1 ]]; then
    list_files "DRY RUN: nothing downloaded; the files it writes:" "${OUTPUTS[@]}"
    exit 0
fi
python -m recipe_tapo.data.prepare --source all --out-dir "$DATA_DIR" "$@"
ls -l "$DATA_DIR"
