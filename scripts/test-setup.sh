#!/usr/bin/env bash
# Installs what the test suite needs beyond cargo (idempotent; run by .ci/run).
# - PostgreSQL must be reachable at RENKEI_TEST_DATABASE_URL (default 127.0.0.1:5432, user postgres).
set -euo pipefail
url="${RENKEI_TEST_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/test}"
if command -v pg_isready >/dev/null && ! pg_isready -q -d "$url"; then
  echo "test-setup: PostgreSQL at $url is not accepting connections" >&2
  if command -v pg_ctlcluster >/dev/null; then
    pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql)" main start || true
  fi
fi
# - hl7apy (an independent HL7 v2 implementation) reads the ACKs Renkei writes, in
#   crates/hl7v2/tests/hl7apy.rs. Pinned; pip does nothing when it is already installed.
if ! python3 -c 'import importlib.metadata as m, sys; sys.exit(m.version("hl7apy") != "1.3.5")' 2>/dev/null; then
  python3 -m pip install --quiet --disable-pip-version-check hl7apy==1.3.5
fi
