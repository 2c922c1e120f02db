# Sourced by the guide's scripts (bench/guide_baseline.sh, bench/anchor/guide_pipeline.sh),
# which set VENV and PYTHON first: the venv of actions/setup-python, timed as the first step,
# and step_done, which prints "@step NAME SECONDS" on stderr for the harness to read
# (bench/pipeline.py's shell_steps): the seconds since the previous step.
step_start=$EPOCHREALTIME
step_done() { # NAME: print the time since the previous step
    local now=$EPOCHREALTIME
    awk -v n="$1" -v a="$step_start" -v b="$now" 'BEGIN { printf "@step %s %.3f\n", n, b - a }' >&2
    step_start=$now
}

# actions/setup-python: a Python whose pip installs into a fresh environment
[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
export PATH="$VENV/bin:/usr/bin:$PATH" BENTOML_DO_NOT_TRACK=True
step_done venv
