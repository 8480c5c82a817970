#!/usr/bin/env bash
# Integration tests against the real frameworks, and the documentation build (warnings are errors).
#
#   bash ci/integrations.sh            # creates .venv-integrations on first use, then reuses it
#   VENV=/path/to/venv bash ci/integrations.sh
#
# Installs torch-syre (editable) with the extras lightning, transformers, sb3, jax, triton, deepspeed and docs next to
# the pinned CPU torch of constraints-dev.txt, checks that torch was not replaced, runs the tests that need a
# framework (FRAMEWORK_TESTS below: the framework integrations of tests/integrations/, the framework rows of
# tests/core/test_error_table.py, tests/kernels/test_triton.py under Triton's interpreter on CPU, and
# tests/integrations/test_deepspeed.py, ZeRO 0-3 on 2 gloo processes; none may skip: the frameworks are
# installed here), tests/artifacts/test_docs_pages.py (the generated blocks rendered with
# myst-parser's markdown-it), tests/core/test_public_paths.py (the integrations' documented names) and builds
# docs/ with docs/build.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
VENV="${VENV:-.venv-integrations}"
EXTRAS="dev,lightning,transformers,sb3,jax,triton,deepspeed,docs"
start=$(date +%s)

if [ ! -x "$VENV/bin/python" ]; then
  "$PYTHON" -m venv "$VENV"
fi
PY="$VENV/bin/python"
STAMP="$VENV/.integrations-stamp"
if [ ! -f "$STAMP" ] || [ pyproject.toml -nt "$STAMP" ] || [ constraints-dev.txt -nt "$STAMP" ]; then
  "$PY" -m pip install -q -c constraints-dev.txt -e ".[$EXTRAS]"
  touch "$STAMP"
fi
installed=$(date +%s)

"$PY" - <<'PYCHECK'
import importlib, sys
import torch
pinned = [l.split("==")[1].strip() for l in open("constraints-dev.txt") if l.startswith("torch==")][0]
if not torch.__version__.startswith(pinned):
    sys.exit(f"torch {torch.__version__} was installed instead of the pinned {pinned}")
for m in ("lightning", "transformers", "accelerate", "stable_baselines3", "gymnasium", "jax", "optax", "triton", "sphinx", "myst_parser",
          "tensorboard", "deepspeed"):
    importlib.import_module(m)
print(f"torch {torch.__version__}; all integration packages import")
PYCHECK

# -W error::pytest.PytestSkipWarning is not enough for importorskip: count skips instead.
report=$(mktemp)
set +e
FRAMEWORK_TESTS=(
  tests/integrations/test_lightning.py tests/integrations/test_transformers.py tests/integrations/test_sb3.py
  tests/integrations/test_optax.py tests/integrations/test_default_scale_gpt2.py tests/integrations/test_deepspeed.py
  tests/core/test_error_table.py tests/core/test_default_sigma0.py tests/core/test_step_closure.py
  tests/kernels/test_triton.py tests/artifacts/test_docs_pages.py tests/core/test_public_paths.py
)
"$PY" -m pytest -q -p no:cacheprovider -rs "${FRAMEWORK_TESTS[@]}" 2>&1 | tee "$report"
status=${PIPESTATUS[0]}
set -e
if [ "$status" -ne 0 ]; then
  exit "$status"
fi
if grep -q "^SKIPPED" "$report"; then
  echo "integration tests were skipped although their frameworks are installed" >&2
  exit 1
fi
tested=$(date +%s)

PYTHON="$PY" bash docs/build.sh
done_at=$(date +%s)
echo "integrations: install $((installed - start)) s, tests $((tested - installed)) s, docs $((done_at - tested)) s, total $((done_at - start)) s"
