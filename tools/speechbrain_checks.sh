#!/usr/bin/env bash
# Runs SpeechBrain's own checks on this recipe, as SpeechBrain's CI runs them:
#
#   bash tools/speechbrain_checks.sh <speechbrain checkout> [--keep]
#
# The checkout is copied to a scratch folder (under $TMPDIR), the recipe is
# installed in the copy at recipes/MSP-Podcast/emotion_recognition/
# contrastive_teacher_student/ (the files git tracks, without the project's own
# tests/, .ci/, tools/ and configuration), with tests/recipes/MSP-Podcast.csv
# and its setup scripts, and from the copy's root this runs:
#
#   1. pytest tests/consistency/test_recipe.py tests/consistency/test_yaml.py
#      (they check every recipe CSV of the checkout);
#   2. SpeechBrain's linters on the recipe's files, with SpeechBrain's configs
#      and the versions pinned in its .pre-commit-config.yaml: ruff format
#      --check, ruff check, yamllint, codespell, and the pre-commit-hooks
#      fixers (run on a copy, a change is a finding), plus the 1024 kB limit;
#   3. the recipe tests of tests/recipes/MSP-Podcast.csv (run_recipe_tests,
#      on CPU, with the file checks), each row timed.
#
# The Python is the project's (.venv, or $PYTHON), with its packages.
# SpeechBrain's CI installs the checkout, so here too the checkout's speechbrain
# package is imported first, by the recipe runs as by SpeechBrain's test code;
# SPEECHBRAIN_PACKAGE=installed has the recipe runs import the installed one
# (SpeechBrain's test code, run from the checkout's root, always imports the
# checkout's). The linters, at the checkout's pins, are installed from PyPI
# once into an environment of their own ($SPEECHBRAIN_LINT_VENV, by default
# under ~/.cache/ctsl_brain), whatever the project's venv holds.
#
# Prints a summary; the exit status is 1 when any check fails, 2 for a usage
# mistake. The scratch folder is removed when everything passes, kept (for its
# logs) otherwise or with --keep.
set -uo pipefail

usage() {
    echo "usage: bash tools/speechbrain_checks.sh <speechbrain checkout> [--keep]" >&2
    exit 2
}

CHECKOUT=""
KEEP=0
for argument in "$@"; do
    case "$argument" in
        --keep) KEEP=1 ;;
        -h | --help) usage ;;
        -*) echo "error: unknown option $argument" >&2; usage ;;
        *)
            [ -z "$CHECKOUT" ] || usage
            CHECKOUT=$argument
            ;;
    esac
done
[ -n "$CHECKOUT" ] || usage

PROJECT=$(cd "$(dirname "$0")/.." && pwd)
if [ ! -f "$CHECKOUT/tests/utils/recipe_tests.py" ] ||
    [ ! -f "$CHECKOUT/tests/consistency/test_recipe.py" ] ||
    [ ! -d "$CHECKOUT/speechbrain" ]; then
    echo "error: $CHECKOUT is no SpeechBrain checkout (it needs speechbrain/," \
        "tests/utils/recipe_tests.py and tests/consistency/)" >&2
    exit 2
fi
CHECKOUT=$(cd "$CHECKOUT" && pwd)
PYTHON=${PYTHON:-$PROJECT/.venv/bin/python}
if ! "$PYTHON" -c "import torch, speechbrain, pytest" 2>/dev/null; then
    echo "error: $PYTHON cannot import torch, speechbrain and pytest: run" \
        "bash tools/setup.sh --dev, or set PYTHON" >&2
    exit 2
fi
SPEECHBRAIN_PACKAGE=${SPEECHBRAIN_PACKAGE:-checkout}
case "$SPEECHBRAIN_PACKAGE" in
    checkout | installed) ;;
    *) echo "error: SPEECHBRAIN_PACKAGE must be checkout or installed" >&2; exit 2 ;;
esac
LINT_VENV=${SPEECHBRAIN_LINT_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/ctsl_brain/speechbrain-lint}

RECIPE=recipes/MSP-Podcast/emotion_recognition/contrastive_teacher_student
# Setup scripts of the recipe tests: tests/recipes/setup/<script path>/, with
# "_" for "/" and without ".py", one folder per script.
SETUP_PREFIX=tests/recipes/setup/${RECIPE//\//_}_
# Files of the project that are not part of the recipe.
NOT_RECIPE='^(tests/|\.ci/|tools/|pyproject\.toml$|\.gitignore$|\.yamllint$|requirements-dev\.txt$|LICENSE$)'

SCRATCH=$(mktemp -d "${TMPDIR:-/tmp}/speechbrain_checks.XXXXXX")
SB=$SCRATCH/speechbrain
LOGS=$SCRATCH/logs
mkdir -p "$SB" "$LOGS"
declare -a RESULTS=()
FAILED=0

record() {  # record <check> <status: 0 passed> <detail>
    if [ "$2" -eq 0 ]; then
        RESULTS+=("PASS  $1${3:+  ($3)}")
    else
        RESULTS+=("FAIL  $1${3:+  ($3)}")
        FAILED=1
    fi
}

section() {
    printf '\n=== %s ===\n' "$1"
}

# ----- The scratch checkout with the recipe -----
section "Scratch checkout: $SB"
if git -C "$CHECKOUT" rev-parse --is-inside-work-tree >/dev/null 2>&1; then
    # What the checkout holds, tracked or not, without what git ignores
    # (tests/tmp, results, caches).
    (cd "$CHECKOUT" && git ls-files -z --cached --others --exclude-standard |
        tar --null --files-from=- --ignore-failed-read -cf - 2>/dev/null) |
        tar -xf - -C "$SB" || { echo "error: cannot copy $CHECKOUT" >&2; exit 1; }
    echo "speechbrain checkout $(git -C "$CHECKOUT" describe --always --dirty 2>/dev/null)"
else
    cp -a "$CHECKOUT/." "$SB/" || { echo "error: cannot copy $CHECKOUT" >&2; exit 1; }
    rm -rf "$SB/tests/tmp" "$SB/.git"
    echo "speechbrain source tree (no git) from $CHECKOUT"
fi
rm -rf "${SB:?}/$RECIPE" "$SB/tests/recipes/MSP-Podcast.csv" "${SB:?}/$SETUP_PREFIX"*
mkdir -p "$SB/$RECIPE"
copied=0
while IFS= read -r -d '' file; do
    [ -e "$PROJECT/$file" ] || continue  # deleted, not yet committed
    if [[ "$file" =~ $NOT_RECIPE ]]; then
        continue
    fi
    mkdir -p "$SB/$RECIPE/$(dirname "$file")"
    cp -p "$PROJECT/$file" "$SB/$RECIPE/$file"
    copied=$((copied + 1))
done < <(git -C "$PROJECT" ls-files -z)
cp -p "$PROJECT/tests/recipes/MSP-Podcast.csv" "$SB/tests/recipes/"
setups=()
for folder in "$PROJECT/$SETUP_PREFIX"*; do
    [ -d "$folder" ] || continue
    cp -pr "$folder" "$SB/tests/recipes/setup/"
    setups+=("tests/recipes/setup/$(basename "$folder")")
done
echo "recipe: $copied files in $RECIPE; tests/recipes/MSP-Podcast.csv;" \
    "setup scripts: ${setups[*]:-none}"

# ----- Python: the project's packages, and the checkout's speechbrain -----
# An environment of the same interpreter that sees the project's packages and,
# in front of them, the checkout's speechbrain package (as SpeechBrain's CI
# installs it), for pytest and for every recipe run (python on PATH).
site_packages=$("$PYTHON" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
"$PYTHON" -m venv --without-pip "$SCRATCH/venv" || exit 1
venv_site=$("$SCRATCH/venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
if [ "$SPEECHBRAIN_PACKAGE" = checkout ]; then
    mkdir -p "$SCRATCH/checkout_package"
    ln -s "$SB/speechbrain" "$SCRATCH/checkout_package/speechbrain"
    echo "$SCRATCH/checkout_package" >"$venv_site/00_speechbrain_checkout.pth"
fi
echo "import site; site.addsitedir('$site_packages')" >"$venv_site/10_project.pth"
export PATH="$SCRATCH/venv/bin:$PATH"
export PYTHONDONTWRITEBYTECODE=1
probe='import os, speechbrain as sb
print(sb.__version__, os.path.dirname(os.path.realpath(sb.__file__)))'
# The recipe runs import this one; SpeechBrain's test code, run from the
# checkout's root, imports the checkout's package whatever is installed.
speechbrain_used=$(cd / && python -c "$probe") || exit 1
echo "python $(python -c 'import sys; print(sys.version.split()[0])')"
echo "speechbrain of the recipe runs: $speechbrain_used"
echo "speechbrain of SpeechBrain's test code: $(cd "$SB" && python -c "$probe")"

# ----- 1. Consistency tests -----
section "1. Consistency tests (tests/consistency/test_recipe.py, test_yaml.py)"
(cd "$SB" && python -m pytest -p no:cacheprovider -q -rf \
    tests/consistency/test_recipe.py tests/consistency/test_yaml.py) \
    >"$LOGS/consistency.txt" 2>&1
status=$?
python - "$LOGS/consistency.txt" "$RECIPE/" <<'EOF'
import re
import sys

# The tests' verdicts, and SpeechBrain's messages about this recipe by file.
log, recipe = sys.argv[1:]
current, unused, ours, other = None, {}, [], 0
with open(log) as fin:
    for line in fin:
        line = line.strip()
        if re.match(r"(FAILED|PASSED) |=* ?\d+ (passed|failed)", line):
            print(line.strip("= "))
        match = re.match(r"Checking (\S+)\.\.\.$", line)
        if match:
            current = match.group(1)
        if not line.startswith("ERROR:"):
            continue
        match = re.match(r'ERROR: variable "(\w+)" not used in', line)
        if match and current and current.startswith(recipe):
            unused.setdefault(current, []).append(match.group(1))
        elif recipe in line or "MSP-Podcast" in line:
            ours.append(line)
        elif not match:
            other += 1
for line in dict.fromkeys(ours):
    times = f" ({ours.count(line)} rows)" if ours.count(line) > 1 else ""
    print("  " + line.replace(recipe, "") + times)
for hparam_file, keys in unused.items():
    name = hparam_file.replace(recipe, "")
    print(f"  {name}: {len(keys)} keys unused in its script: {', '.join(sorted(keys))}")
print(f"  messages about other recipes: {other}")
EOF
record "consistency tests" "$status" "log: $LOGS/consistency.txt"

# ----- 2. Linters -----
section "2. SpeechBrain's linters on the recipe"
pinned=$(python - "$SB/.pre-commit-config.yaml" <<'EOF'
import sys

import yaml

packages = {
    "astral-sh/ruff-pre-commit": "ruff",
    "adrienverge/yamllint": "yamllint",
    "codespell-project/codespell": "codespell",
    "pre-commit/pre-commit-hooks": "pre-commit-hooks",
}
with open(sys.argv[1]) as fin:
    config = yaml.safe_load(fin)
for repo in config["repos"]:
    for url, package in packages.items():
        if repo["repo"].rstrip("/").endswith(url):
            print(f"{package}=={repo['rev'].lstrip('v')}")
EOF
)
pinned=$(echo "$pinned" | sort | tr '\n' ' ')
echo "pinned in .pre-commit-config.yaml: $pinned"
if [ ! -x "$LINT_VENV/bin/python" ] || [ "$(cat "$LINT_VENV/pinned" 2>/dev/null)" != "$pinned" ]; then
    echo "installing them into $LINT_VENV"
    rm -rf "$LINT_VENV"
    # shellcheck disable=SC2086
    { "$PYTHON" -m venv "$LINT_VENV" &&
        "$LINT_VENV/bin/python" -m pip install --disable-pip-version-check $pinned tomli &&
        echo "$pinned" >"$LINT_VENV/pinned"; } >"$LOGS/lint_install.txt" 2>&1 ||
        tail -n 5 "$LOGS/lint_install.txt"
fi
[ -f "$LINT_VENV/pinned" ]
lint_tools_ok=$?
record "linters installed ($pinned)" "$lint_tools_ok"

cd "$SB" || exit 1
mapfile -t py_files < <(find "$RECIPE" -name '*.py' -type f | sort)
mapfile -t yaml_files < <(find "$RECIPE" \( -name '*.yaml' -o -name '*.yml' \) -type f | sort)
mapfile -t all_files < <(find "$RECIPE" "${setups[@]}" tests/recipes/MSP-Podcast.csv -type f | sort)

if [ "$lint_tools_ok" -eq 0 ]; then
    L=$LINT_VENV/bin
    "$L/ruff" format --check --force-exclude "${py_files[@]}" >"$LOGS/ruff_format.txt" 2>&1
    status=$?
    would=$(grep -c "^Would reformat" "$LOGS/ruff_format.txt")
    echo "ruff format --check: ${#py_files[@]} files, $would would be reformatted"
    grep "^Would reformat" "$LOGS/ruff_format.txt" | sed "s|$RECIPE/|  |"
    record "ruff format --check" "$status" "$would of ${#py_files[@]} files would be reformatted"

    "$L/ruff" check --force-exclude --output-format=concise "${py_files[@]}" \
        >"$LOGS/ruff_check.txt" 2>&1
    status=$?
    "$L/ruff" check --force-exclude --statistics "${py_files[@]}" >"$LOGS/ruff_statistics.txt" 2>&1
    findings=$(grep -cE "^$RECIPE/.*:[0-9]+:[0-9]+: " "$LOGS/ruff_check.txt")
    echo "ruff check: $findings findings; by rule:"
    grep -E "^ *[0-9]+\s+[A-Z]+[0-9]+" "$LOGS/ruff_statistics.txt" | sed 's/^/  /'
    echo "  by file:"
    grep -oE "^$RECIPE/[^:]+" "$LOGS/ruff_check.txt" | sort | uniq -c | sed "s|$RECIPE/||; s/^/  /"
    record "ruff check" "$status" "$findings findings"

    "$L/yamllint" -f parsable "${yaml_files[@]}" >"$LOGS/yamllint.txt" 2>&1
    status=$?
    errors=$(grep -c "\[error\]" "$LOGS/yamllint.txt")
    warnings=$(grep -c "\[warning\]" "$LOGS/yamllint.txt")
    echo "yamllint: ${#yaml_files[@]} files, $errors errors, $warnings warnings (warnings do not fail)"
    grep "\[error\]" "$LOGS/yamllint.txt" | sed "s|$RECIPE/|  |"
    grep "\[warning\]" "$LOGS/yamllint.txt" |
        sed -E "s|^$RECIPE/([^:]+):.*\(([a-z-]+)\)\$|\1 (\2)|" | sort | uniq -c |
        sed 's/^ */  warnings: /'
    record "yamllint" "$status" "$errors errors, $warnings warnings"

    "$L/codespell" --ignore-words=.dict-speechbrain.txt --skip="*.ipynb" \
        --ignore-regex='base64,.*?==' "${all_files[@]}" >"$LOGS/codespell.txt" 2>&1
    status=$?
    findings=$(grep -c ":[0-9]*: " "$LOGS/codespell.txt")
    echo "codespell: $findings findings"
    sed "s|^$RECIPE/|  |" "$LOGS/codespell.txt"
    record "codespell" "$status" "$findings findings"

    # The pre-commit-hooks fixers change files: they run on a copy.
    rm -rf "$SCRATCH/fixers" && mkdir -p "$SCRATCH/fixers"
    cp -a --parents "${all_files[@]}" "$SCRATCH/fixers/"
    hooks_status=0
    (
        cd "$SCRATCH/fixers" || exit 1
        mapfile -t text < <(for f in "${all_files[@]}"; do
            grep -Iq . "$f" && echo "$f"; done)
        mapfile -t python < <(printf '%s\n' "${all_files[@]}" | grep '\.py$')
        mapfile -t requirements < <(printf '%s\n' "${all_files[@]}" | grep -E 'requirements.*\.txt$')
        status=0
        "$L/trailing-whitespace-fixer" "${text[@]}" || status=1
        "$L/end-of-file-fixer" "${python[@]}" || status=1
        "$L/mixed-line-ending" --fix=no "${python[@]}" || status=1
        if [ ${#requirements[@]} -gt 0 ]; then
            "$L/requirements-txt-fixer" "${requirements[@]}" || status=1
        fi
        exit $status
    ) >"$LOGS/pre_commit_hooks.txt" 2>&1 || hooks_status=1
    large=$(find "${all_files[@]}" -size +1024k)
    [ -z "$large" ] || { hooks_status=1; echo "larger than 1024 kB: $large" >>"$LOGS/pre_commit_hooks.txt"; }
    echo "pre-commit-hooks (trailing-whitespace, end-of-file, mixed-line-ending," \
        "requirements-txt-fixer, large files):"
    sed 's/^/  /' "$LOGS/pre_commit_hooks.txt"
    record "pre-commit-hooks" "$hooks_status"
fi

# ----- 3. Recipe tests -----
section "3. Recipe tests (run_recipe_tests, Dataset MSP-Podcast, --device=cpu)"
python -c 'from tests.utils.recipe_tests import run_recipe_tests; print("TEST FAILED!") if not(run_recipe_tests(filters_fields=["Dataset"], filters=[["MSP-Podcast"]], do_checks=True, run_opts="--device=cpu")) else print("TEST PASSED")' \
    >"$LOGS/recipe_tests.txt" 2>&1
grep -q "^TEST PASSED" "$LOGS/recipe_tests.txt"
status=$?
python - "$LOGS/recipe_tests.txt" <<'EOF'
import csv
import os
import re
import sys

# Each row's verdict, time, missing files and the end of its stderr, from
# run_recipe_tests' log and the rows' output folders.
with open("tests/recipes/MSP-Podcast.csv", newline="") as fin:
    rows = list(csv.DictReader(fin, skipinitialspace=True))
times, failed, crashed, missing, current = {}, set(), set(), {}, None
with open(sys.argv[1]) as fin:
    for line in fin:
        match = re.search(r"Running test for (MSP-Podcast_row_\d+)", line)
        if match:
            current = match.group(1)
        match = re.search(r"\.\.\. ([0-9.]+)s$", line.strip())
        if match and current:
            times[current] = float(match.group(1))
        if current and "Error in" in line:
            failed.add(current)
            crashed.add(current)
        match = re.search(r"does not contain the expected file tests/tmp/[^/]+/(\S+)", line)
        if match and current:
            failed.add(current)
            missing.setdefault(current, []).append(match.group(1))
total = 0.0
for i, row in enumerate(rows):
    name = f"MSP-Podcast_row_{i + 2:02d}"
    seconds = times.get(name)
    total += seconds or 0.0
    verdict = "FAIL" if name in failed or seconds is None else "pass"
    shown = f"{seconds:6.1f} s" if seconds is not None else "     - "
    recipe = os.path.dirname(row["Script_file"])
    script = os.path.basename(row["Script_file"])
    hparam = os.path.relpath(row["Hparam_file"], recipe)
    print(f"{verdict}  {name}  {shown}  {script} {hparam}")
    if name in missing:
        print(f"        missing: {', '.join(missing[name])}")
    stderr = os.path.join("tests/tmp", name, "stderr.txt")
    if name in crashed and os.path.isfile(stderr):
        with open(stderr, errors="replace") as fin:
            text = fin.read().replace("\r", "\n")
        lines = [t for t in text.splitlines() if t.strip() and not re.search(r"\d+%\|", t)]
        for tail in lines[-4:]:
            print(f"        | {tail[:400]}")
print(f"total {total:.1f} s")
EOF
record "recipe tests" "$status" "log: $LOGS/recipe_tests.txt, outputs: $SB/tests/tmp"

# ----- Summary -----
section "Summary (recipe runs with speechbrain $speechbrain_used)"
printf '%s\n' "${RESULTS[@]}"
if [ "$FAILED" -eq 0 ] && [ "$KEEP" -eq 0 ]; then
    cd / && rm -rf "$SCRATCH"
else
    echo "scratch checkout and logs kept in $SCRATCH"
fi
exit "$FAILED"
