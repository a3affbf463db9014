#!/usr/bin/env bash
# Installs fhirclient (pinned), the SMART on FHIR Python client the authorization test drives
# against the real server (crates/renkei/tests/fhirclient.rs), for ${PYTHON:-python3}.
# Idempotent: does nothing when that version is already installed. Run by test-setup.sh, and
# by that test itself when fhirclient is missing.
set -euo pipefail
py="${PYTHON:-python3}"
version=4.4.0
installed() {
  "$py" -c "import importlib.metadata as m, sys; sys.exit(m.version('fhirclient') != '$version')" 2>/dev/null
}
installed && exit 0
if ! "$py" -m pip --version >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    apt-get install -y -qq python3-pip >/dev/null
  else
    echo "install-fhirclient: $py has no pip; install pip (Debian: apt-get install python3-pip)" >&2
    exit 1
  fi
fi
pip=("$py" -m pip install --quiet --disable-pip-version-check)
"${pip[@]}" "fhirclient==$version" 2>/dev/null ||
  "${pip[@]}" --user --break-system-packages "fhirclient==$version"
installed
