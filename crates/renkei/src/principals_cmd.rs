//! `renkei clients` and `renkei users`: who may ask this node for tokens, administered from
//! the shell (never through the REST API). Each registration is checked by
//! `auth::registry` before it is stored; a password is read from standard input, hashed with
//! argon2id, and never printed, logged or passed on the command line.

use std::io::BufRead;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use auth::registry::{Client, ClientKind, User};

use crate::storage::StoreArgs;

#[derive(Debug, clap::Subcommand)]
pub enum ClientsCommand {
    /// Register (or replace) a client: a backend service (`--jwks` or `--jwks-uri`) or an app
    /// (`--redirect-uri`, authorization code with PKCE).
    Add(ClientAddArgs),
    /// List the registered clients.
    List(StoreOnly),
    /// Remove a client (its live tokens expire; it gets no new ones).
    Remove(ClientRemoveArgs),
}

#[derive(Debug, clap::Args)]
pub struct StoreOnly {
    #[command(flatten)]
    store: StoreArgs,
}

#[derive(Debug, clap::Args)]
pub struct ClientAddArgs {
    #[command(flatten)]
    store: StoreArgs,
    /// The client id.
    #[arg(long)]
    id: String,
    /// Scopes it may be granted, e.g. "system/*.rs".
    #[arg(long)]
    scope: String,
    /// Its public keys as a JWK Set file (backend services, RS384 or ES384 keys).
    #[arg(long, value_name = "FILE", conflicts_with = "jwks_uri")]
    jwks: Option<PathBuf>,
    /// Where it publishes its JWK Set (backend services).
    #[arg(long, value_name = "URL")]
    jwks_uri: Option<String>,
    /// A redirect URI of an app (repeat for several): https, or http on the loopback.
    #[arg(long = "redirect-uri", value_name = "URI")]
    redirect_uris: Vec<String>,
    /// The organisation it acts for (`Organization/x`).
    #[arg(long, value_name = "REFERENCE")]
    organization: Option<String>,
}

#[derive(Debug, clap::Args)]
pub struct ClientRemoveArgs {
    #[command(flatten)]
    store: StoreArgs,
    /// The client id.
    #[arg(long)]
    id: String,
}

#[derive(Debug, clap::Subcommand)]
pub enum UsersCommand {
    /// Add (or replace) a user of the built-in login; the password is read from standard
    /// input (its first line).
    Add(UserAddArgs),
    /// List the users.
    List(StoreOnly),
    /// Stop a user from signing in.
    Disable(UserNameArgs),
}

#[derive(Debug, clap::Args)]
pub struct UserAddArgs {
    #[command(flatten)]
    store: StoreArgs,
    /// The login name.
    #[arg(long)]
    name: String,
    /// The FHIR resource the user is: `Practitioner/x`, or for a patient the golden
    /// `Patient/y`.
    #[arg(long, value_name = "REFERENCE")]
    fhir_user: Option<String>,
    /// Their organisation (`Organization/x`).
    #[arg(long, value_name = "REFERENCE")]
    organization: Option<String>,
    /// Scopes their logins may be granted, e.g. "user/*.rs openid fhirUser".
    #[arg(long)]
    scope: String,
}

#[derive(Debug, clap::Args)]
pub struct UserNameArgs {
    #[command(flatten)]
    store: StoreArgs,
    /// The login name.
    #[arg(long)]
    name: String,
}

pub async fn run_clients(cmd: ClientsCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        ClientsCommand::Add(a) => {
            let jwks = match &a.jwks {
                Some(path) => Some(
                    std::fs::read_to_string(path)
                        .with_context(|| format!("reading {}", path.display()))?,
                ),
                None => None,
            };
            let kind = if jwks.is_some() || a.jwks_uri.is_some() {
                ClientKind::Backend
            } else {
                ClientKind::Public
            };
            let client = Client {
                id: a.id,
                kind,
                scope: a.scope,
                jwks,
                jwks_uri: a.jwks_uri,
                redirect_uris: a.redirect_uris,
                organization: a.organization,
                disabled: false,
            };
            client.validate()?;
            let registry = a.store.open_security(false).await?.registry;
            registry.put_client(&client).await?;
            out!(
                "client {} registered ({}, scopes: {})",
                client.id,
                client.kind.as_str(),
                client.scope
            );
            Ok(ExitCode::SUCCESS)
        }
        ClientsCommand::List(a) => {
            let registry = a.store.open_security(true).await?.registry;
            let clients = registry.clients().await?;
            for c in &clients {
                let keys = match (&c.jwks, &c.jwks_uri) {
                    (Some(_), _) => "jwks inline".to_owned(),
                    (None, Some(uri)) => format!("jwks_uri {uri}"),
                    (None, None) => format!("redirects {}", c.redirect_uris.join(" ")),
                };
                out!(
                    "{}\t{}\t{}\t{}\t{}{}",
                    c.id,
                    c.kind.as_str(),
                    c.scope,
                    c.organization.as_deref().unwrap_or("-"),
                    keys,
                    if c.disabled { "\tdisabled" } else { "" }
                );
            }
            out!("{} clients", clients.len());
            Ok(ExitCode::SUCCESS)
        }
        ClientsCommand::Remove(a) => {
            let registry = a.store.open_security(true).await?.registry;
            if registry.remove_client(&a.id).await? {
                out!("client {} removed", a.id);
                Ok(ExitCode::SUCCESS)
            } else {
                eprintln!("no client {}", a.id);
                Ok(ExitCode::FAILURE)
            }
        }
    }
}

/// The first line of standard input, without its line ending.
fn password_from_stdin() -> anyhow::Result<String> {
    let mut line = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut line)
        .context("reading the password from standard input")?;
    let password = line.trim_end_matches(['\r', '\n']).to_owned();
    anyhow::ensure!(!password.is_empty(), "no password on standard input");
    Ok(password)
}

pub async fn run_users(cmd: UsersCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        UsersCommand::Add(a) => {
            let password = password_from_stdin()?;
            let user = User {
                name: a.name,
                password_hash: auth::password::hash(&password)?,
                fhir_user: a.fhir_user,
                organization: a.organization,
                scope: a.scope,
                disabled: false,
            };
            user.validate()?;
            let registry = a.store.open_security(false).await?.registry;
            registry.put_user(&user).await?;
            out!("user {} added (scopes: {})", user.name, user.scope);
            Ok(ExitCode::SUCCESS)
        }
        UsersCommand::List(a) => {
            let registry = a.store.open_security(true).await?.registry;
            let users = registry.users().await?;
            for u in &users {
                out!(
                    "{}\t{}\t{}\t{}{}",
                    u.name,
                    u.fhir_user.as_deref().unwrap_or("-"),
                    u.organization.as_deref().unwrap_or("-"),
                    u.scope,
                    if u.disabled { "\tdisabled" } else { "" }
                );
            }
            out!("{} users", users.len());
            Ok(ExitCode::SUCCESS)
        }
        UsersCommand::Disable(a) => {
            let registry = a.store.open_security(true).await?.registry;
            let Some(mut user) = registry.user(&a.name).await? else {
                eprintln!("no user {}", a.name);
                return Ok(ExitCode::FAILURE);
            };
            user.disabled = true;
            registry.put_user(&user).await?;
            out!("user {} disabled", a.name);
            Ok(ExitCode::SUCCESS)
        }
    }
}
