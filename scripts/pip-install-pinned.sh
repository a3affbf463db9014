#!/usr/bin/env bash
# Installs one Python package at a pinned version for ${PYTHON:-python3}, for the tests that
# drive an independent implementation against Renkei (install-hl7apy.sh, install-fhirclient.sh).
# Usage: pip-install-pinned.sh PACKAGE VERSION
# Idempotent: does nothing when that version is already installed.
set -euo pipefail
package="$1"
version="$2"
py="${PYTHON:-python3}"
installed() {
  "$py" -c "import importlib.metadata as m, sys; sys.exit(m.version('$package') != '$version')" 2>/dev/null
}
installed && exit 0
if ! "$py" -m pip --version >/dev/null 2>&1; then
  # Debian's Python comes without pip; as root, install it from the distribution.
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    apt-get install -y -qq python3-pip >/dev/null
  else
    echo "pip-install-pinned: $py has no pip; install pip (Debian: apt-get install python3-pip)" >&2
    exit 1
  fi
fi
pip=("$py" -m pip install --quiet --disable-pip-version-check)
# A Python marked externally managed (PEP 668) refuses a plain install; a per-user install
# beside the distribution's packages is what the tests need.
"${pip[@]}" "$package==$version" 2>/dev/null ||
  "${pip[@]}" --user --break-system-packages "$package==$version"
installed
