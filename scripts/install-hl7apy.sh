#!/usr/bin/env bash
# Installs hl7apy (pinned), the independent HL7 v2 implementation that reads the ACKs Renkei
# writes (crates/hl7v2/tests/hl7apy.rs, crates/renkei/tests/hl7.rs), for ${PYTHON:-python3}.
# Idempotent: does nothing when that version is already installed. Run by test-setup.sh, and
# by those tests themselves when hl7apy is missing.
set -euo pipefail
py="${PYTHON:-python3}"
version=1.3.5
installed() {
  "$py" -c "import importlib.metadata as m, sys; sys.exit(m.version('hl7apy') != '$version')" 2>/dev/null
}
installed && exit 0
if ! "$py" -m pip --version >/dev/null 2>&1; then
  # Debian's Python comes without pip; as root, install it from the distribution.
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    apt-get install -y -qq python3-pip >/dev/null
  else
    echo "install-hl7apy: $py has no pip; install pip (Debian: apt-get install python3-pip)" >&2
    exit 1
  fi
fi
pip=("$py" -m pip install --quiet --disable-pip-version-check)
# A Python marked externally managed (PEP 668) refuses a plain install; a per-user install
# beside the distribution's packages is what the tests need.
"${pip[@]}" "hl7apy==$version" 2>/dev/null ||
  "${pip[@]}" --user --break-system-packages "hl7apy==$version"
installed
