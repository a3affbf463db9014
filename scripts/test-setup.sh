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
# - hl7apy (an independent HL7 v2 implementation) reads the ACKs Renkei writes (pinned; for
#   ${PYTHON:-python3}, as the tests use it).
bash "$(dirname "$0")/install-hl7apy.sh"
# - fhirclient (SMART on FHIR's Python client, pinned) obtains a token by backend services and
#   reads data in crates/renkei/tests/fhirclient.rs.
bash "$(dirname "$0")/install-fhirclient.sh"
# - the database clients the audit-log tests tamper with (`sqlite3`, `psql`), as an
#   administrator would.
if ! command -v sqlite3 >/dev/null || ! command -v psql >/dev/null; then
  if command -v apt-get >/dev/null; then
    apt-get install -y -q sqlite3 postgresql-client >/dev/null || {
      apt-get update -q >/dev/null && apt-get install -y -q sqlite3 postgresql-client >/dev/null
    }
  fi
fi
