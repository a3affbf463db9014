//! The Python that has hl7apy, for the tests that let it read Renkei's ACKs (this crate's
//! `tests/hl7apy.rs`, and `crates/renkei/tests/hl7.rs`, which includes this file by path).
//! When hl7apy is missing, `scripts/install-hl7apy.sh` installs it (as `.ci/run` does first),
//! so that a plain `cargo test --workspace` works on a fresh machine. Never silently skipped:
//! if python3 is missing or the install fails, the test fails and says why.

use std::path::PathBuf;
use std::process::Command;

/// `$PYTHON` (default `python3`), with hl7apy installed.
pub fn python_with_hl7apy() -> String {
    static PYTHON: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    PYTHON
        .get_or_init(|| {
            let python = std::env::var("PYTHON").unwrap_or_else(|_| "python3".to_owned());
            if has_hl7apy(&python).is_err() {
                // Both including crates sit at crates/<name>.
                let script = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                    .join("../../scripts/install-hl7apy.sh");
                let status = Command::new("bash")
                    .arg(&script)
                    .env("PYTHON", &python)
                    .status();
                eprintln!("hl7apy was missing; ran {}: {status:?}", script.display());
            }
            if let Err(why) = has_hl7apy(&python) {
                panic!(
                    "hl7apy is not installed for {python}, and scripts/install-hl7apy.sh did \
                     not install it (pip install hl7apy==1.3.5): {why}"
                );
            }
            python
        })
        .clone()
}

fn has_hl7apy(python: &str) -> Result<(), String> {
    let probe = Command::new(python)
        .args(["-c", "import hl7apy"])
        .output()
        .map_err(|e| format!("cannot run {python} ({e}): install Python 3"))?;
    if probe.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&probe.stderr).into_owned())
    }
}
