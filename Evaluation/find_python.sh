# Sourced by eval_sod.sh and eval_vsod.sh: sets python_bin to the project's .venv, else to the active environment's
# python3 (a conda or virtual environment, or the system's), says which on stderr, and ends the script in one line
# (exit 2) when that Python cannot import torch.
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if [ -x "$repo/.venv/bin/python" ]; then
    python_bin="$repo/.venv/bin/python"
    python_from="the project's .venv"
elif python_bin="$(command -v python3)"; then
    python_from="the active environment${VIRTUAL_ENV:+ ($VIRTUAL_ENV)}${CONDA_PREFIX:+ ($CONDA_PREFIX)}: no $repo/.venv"
else
    echo "$(basename "$0"): no $repo/.venv and no python3 on PATH: run 'make venv' in $repo" >&2
    exit 2
fi
if ! "$python_bin" -c "import importlib.util, sys; sys.exit(importlib.util.find_spec('torch') is None)" 2>/dev/null
then
    echo "$(basename "$0"): $python_bin ($python_from) has no torch: run 'make venv' in $repo, or activate an" \
         "environment with requirements.txt installed" >&2
    exit 2
fi
echo "$(basename "$0"): using $python_bin ($python_from)" >&2
