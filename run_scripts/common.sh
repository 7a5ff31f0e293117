# Shared by the GPU run scripts: sourced, not run.
#   DRY_RUN=1  compose and validate the whole config (hydra, verl's checks, the TAPO start-up
#              checks), list the files the run needs, print the command; start no Ray.

# The command line, printed, then run (or checked only, under DRY_RUN=1).
run_recipe_main() {
    printf '+ python -m recipe_tapo.main'
    printf ' %q' "$@"
    printf '\n'
    if [[ "${DRY_RUN:-0}" == 1 ]]; then
        TAPO_DRY_RUN=1 python -m recipe_tapo.main "$@"
    else
        python -m recipe_tapo.main "$@"
    fi
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
