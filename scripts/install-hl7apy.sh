#!/usr/bin/env bash
# Installs hl7apy (pinned), the independent HL7 v2 implementation that reads the ACKs Renkei
# writes (crates/hl7v2/tests/hl7apy.rs, crates/renkei/tests/hl7.rs), for ${PYTHON:-python3}.
# Idempotent: does nothing when that version is already installed. Run by test-setup.sh, and
# by those tests themselves when hl7apy is missing.
set -euo pipefail
exec bash "$(dirname "$0")/pip-install-pinned.sh" hl7apy 1.3.5
