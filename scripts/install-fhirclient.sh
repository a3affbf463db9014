#!/usr/bin/env bash
# Installs fhirclient (pinned), the SMART on FHIR Python client the authorization test drives
# against the real server (crates/renkei/tests/fhirclient.rs), for ${PYTHON:-python3}.
# Idempotent: does nothing when that version is already installed. Run by test-setup.sh, and
# by that test itself when fhirclient is missing.
set -euo pipefail
exec bash "$(dirname "$0")/pip-install-pinned.sh" fhirclient 4.4.0
