#!/usr/bin/env bash
# Install everything the test suite needs into ./.venv and run it. This is the README's test command and
# what CI runs (.ci/run). GLIMP_TEST_STRICT=1 turns every "dependency missing" skip into a failure.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh all
export GLIMP_TEST_STRICT=1
set +e
.venv/bin/python -m pytest -q --timeout 900 "$@"
rc=$?
set -e
if [ "$rc" -eq 5 ]; then
    echo "pytest collected no tests: that is a failure, not a pass" >&2
    exit 1
fi
exit "$rc"
