#!/usr/bin/env bash
# The test suite in two pytest processes. One process running all ~380 tests has died in native
# code (SIGSEGV, no Python traceback) around the prepare kill/resume tests after a few hundred
# other tests; each half passes on its own. Not root-caused yet: see the closing note.
set -euo pipefail
cd "$(dirname "$0")/.."
first=(); second=()
for f in tests/test_*.py; do
    if [[ "$f" < "tests/test_prepare_pipeline.py" ]]; then first+=("$f"); else second+=("$f"); fi
done
python -m pytest -q "$@" "${first[@]}"
python -m pytest -q "$@" "${second[@]}"
