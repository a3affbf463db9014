//! The node's secret key files, kept outside the database: the access-token signing ring
//! (`token-keys.json`, ES256 keys with their ids) and the audit log's head-signing key
//! (`audit-signing.key`, Ed25519 PKCS#8). Both default to the data directory and are named by
//! `--token-keys` / `--audit-key` otherwise (required with `--database-url`). A missing file
//! is created on first use, readable by the node's account only (mode 0600).

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context;
use auth::chain::HeadSigner;
use auth::token::TokenKeys;

use crate::storage::StoreArgs;

/// The token ring's file name in a data directory.
pub const TOKEN_KEYS_FILE: &str = "token-keys.json";

/// Where a key file lives: `explicit`, or `default_name` in the data directory.
pub fn key_path(
    store: &StoreArgs,
    explicit: Option<&Path>,
    default_name: &str,
    flag: &str,
) -> anyhow::Result<PathBuf> {
    match (explicit, &store.data) {
        (Some(p), _) => Ok(p.to_owned()),
        (None, Some(dir)) if store.database_url.is_none() => Ok(dir.join(default_name)),
        _ => anyhow::bail!("{flag} FILE is required with --database-url"),
    }
}

/// Writes `bytes` to a new file at `path`, readable by its owner only; fails if it exists.
fn create_secret(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    if let Some(dir) = path.parent()
        && !dir.as_os_str().is_empty()
    {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut f = options
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    f.write_all(bytes)?;
    f.sync_all()?;
    Ok(())
}

/// The token-signing ring at `path`, created with one new key when the file does not exist.
pub fn token_keys(path: &Path) -> anyhow::Result<TokenKeys> {
    match std::fs::read_to_string(path) {
        Ok(text) => TokenKeys::from_json(&text)
            .with_context(|| format!("{} is not a token key ring", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let ring = TokenKeys::generate(chrono::Utc::now().timestamp())?;
            create_secret(path, ring.to_json().as_bytes())?;
            tracing::info!(file = %path.display(), "created the access-token signing keys");
            Ok(ring)
        }
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

/// Replaces the ring at `path` with `ring` (a rotation): written beside it and renamed over
/// it, so a crash leaves the old ring or the new one, never half of one.
pub fn save_token_keys(path: &Path, ring: &TokenKeys) -> anyhow::Result<()> {
    let tmp = path.with_extension("json.new");
    let _ = std::fs::remove_file(&tmp);
    create_secret(&tmp, ring.to_json().as_bytes())?;
    std::fs::rename(&tmp, path).with_context(|| format!("replacing {}", path.display()))?;
    Ok(())
}

/// The node key's file name in a data directory: the node's client-assertion key in a network.
pub const NODE_KEY_FILE: &str = "node-key.json";

/// The node's client-assertion key at `path`, created when the file does not exist.
pub fn node_key(path: &Path) -> anyhow::Result<auth::client_key::ClientKey> {
    match std::fs::read_to_string(path) {
        Ok(text) => auth::client_key::ClientKey::from_json(&text)
            .with_context(|| format!("{} is not a node key", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let key = auth::client_key::ClientKey::generate(chrono::Utc::now().timestamp())?;
            create_secret(path, key.to_json().as_bytes())?;
            tracing::info!(file = %path.display(), "created the node's client-assertion key");
            Ok(key)
        }
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

/// The network key of privacy mode at `path` (base64url text, shared by the nodes and never
/// given to the hub).
pub fn network_key(path: &Path) -> anyhow::Result<exchange::privacy::NetworkKey> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    exchange::privacy::NetworkKey::from_text(&text)
        .with_context(|| format!("{} is not a network key", path.display()))
}

/// The audit head-signing key at `path`, created when the file does not exist.
pub fn audit_key(path: &Path) -> anyhow::Result<HeadSigner> {
    match std::fs::read(path) {
        Ok(bytes) => HeadSigner::from_pkcs8(&bytes)
            .with_context(|| format!("{} is not an audit key", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let pkcs8 = HeadSigner::generate_pkcs8()?;
            create_secret(path, &pkcs8)?;
            tracing::info!(file = %path.display(), "created the audit log's signing key");
            Ok(HeadSigner::from_pkcs8(&pkcs8)?)
        }
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

/// `renkei token-keys`: the access-token signing ring.
#[derive(Debug, clap::Subcommand)]
pub enum TokenKeysCommand {
    /// Add a new signing key; the older keys keep verifying the tokens they signed, and
    /// those older than `--retire-after` are dropped. A running server reads the ring when
    /// it starts: restart it to sign with the new key.
    Rotate(RotateArgs),
}

#[derive(Debug, clap::Args)]
pub struct RotateArgs {
    #[command(flatten)]
    store: StoreArgs,
    /// The ring file (default: token-keys.json in --data).
    #[arg(long, value_name = "FILE")]
    token_keys: Option<PathBuf>,
    /// Drop keys (other than the new one) created more than this many seconds ago: longer
    /// than any token lives (an hour at most), so that no live token loses its key.
    #[arg(long, value_name = "SECONDS", default_value_t = 86_400)]
    retire_after: i64,
}

pub fn run(cmd: TokenKeysCommand) -> anyhow::Result<()> {
    match cmd {
        TokenKeysCommand::Rotate(a) => {
            anyhow::ensure!(
                a.retire_after >= 3600,
                "--retire-after must be at least 3600 seconds (the longest token lifetime)"
            );
            let path = key_path(
                &a.store,
                a.token_keys.as_deref(),
                TOKEN_KEYS_FILE,
                "--token-keys",
            )?;
            let mut ring = token_keys(&path)?;
            let now = chrono::Utc::now().timestamp();
            ring.rotate(now)?;
            let retired = ring.retire_older_than(now - a.retire_after);
            save_token_keys(&path, &ring)?;
            println!(
                "rotated {}: signing with key {}, {retired} old key(s) retired",
                path.display(),
                ring.current_kid().unwrap_or("-")
            );
            Ok(())
        }
    }
}
