#!/bin/sh
# Regenerate the study figures README.md quotes in "Tuning: optimize":
# study_history.png and tuned_vs_base.png come from `optimize run traces/ --trials 100
# --jobs 2` on the shipped traces with the seed config and scenario. The study runs in a
# temporary directory; its summary.json is printed (the README's numbers come from it).
#
#     sh docs/figures/regenerate_study.sh            # uses .venv/bin/python when present
#     PYTHON=python3 sh docs/figures/regenerate_study.sh
set -eu
root=$(cd "$(dirname "$0")/../.." && pwd)
python=${PYTHON:-$root/.venv/bin/python}
[ -x "$python" ] || python=python3
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$work"
"$python" -m optimize.cli run "$root/traces/" --trials 100 --jobs 2 --json > summary.json
cp studies/routing/history.png "$root/docs/figures/study_history.png"
cp studies/routing/tuned_vs_base.png "$root/docs/figures/tuned_vs_base.png"
cat summary.json
