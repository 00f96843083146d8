//! `settle keys`: create, list and revoke API keys. Secrets are shown once
//! and stored only as a SHA-256 hash.

use crate::DatabaseArgs;
use anyhow::{Context, bail};
use clap::Subcommand;
use rand::Rng;
use rand::distr::Alphanumeric;
use settle_api::signing::vault::{MASTER_KEY_VAR, MasterKey, SigningSecret};
use settle_core::clock::{Clock, SystemClock};
use settle_core::ids::{ApiKeyId, IdGenerator};
use settle_core::tenancy::RateLimit;
use settle_core::tenancy::{Environment, Scope};
use settle_store::Store;
use settle_store::records::ApiKeyRecord;
use std::process::ExitCode;

/// Random characters in a secret: 32 alphanumerics carry about 190 bits.
const SECRET_CHARS: usize = 32;

#[derive(Subcommand)]
pub enum KeysCommand {
    /// Create a key (and the organization, if new). Prints the secret once.
    Create {
        #[arg(long)]
        org: String,
        #[arg(long, value_parser = ["sandbox", "live"])]
        environment: String,
        /// Repeatable; default: every scope.
        #[arg(long = "scope")]
        scopes: Vec<String>,
        /// Print one JSON object (id, secret, org, environment, scopes).
        #[arg(long)]
        json: bool,
        /// Every request with this key must be signed (RFC 9421, see
        /// docs/signing.md); also prints the key's signing secret, once.
        #[arg(long)]
        require_signature: bool,
        #[command(flatten)]
        db: DatabaseArgs,
        #[command(flatten)]
        rate_limit: RateLimitArgs,
    },
    /// List keys (never their secrets).
    List {
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        db: DatabaseArgs,
    },
    /// Revoke a key; it stops working within a second on every server.
    Revoke {
        id: String,
        #[command(flatten)]
        db: DatabaseArgs,
    },
}

/// A key's own rate limit (both flags, or neither: the server's default).
#[derive(clap::Args, Clone, Debug)]
pub struct RateLimitArgs {
    /// Requests per second for this key (token bucket rate), instead of the server's default.
    #[arg(long, requires = "rate_limit_burst")]
    pub rate_limit_per_second: Option<u32>,
    /// Requests this key may send at once (token bucket size), instead of the server's default.
    #[arg(long, requires = "rate_limit_per_second")]
    pub rate_limit_burst: Option<u32>,
}

impl RateLimitArgs {
    pub fn limit(&self) -> anyhow::Result<Option<RateLimit>> {
        match (self.rate_limit_per_second, self.rate_limit_burst) {
            (Some(rate), Some(burst)) => Ok(Some(
                RateLimit::new(rate, burst).with_context(|| format!("--rate-limit-per-second and --rate-limit-burst must be 1 to {}", RateLimit::MAX))?,
            )),
            _ => Ok(None),
        }
    }
}

/// A new secret: `sk_<environment>_` and random alphanumerics.
pub fn new_secret(environment: Environment) -> String {
    let random: String = rand::rng().sample_iter(&Alphanumeric).take(SECRET_CHARS).map(char::from).collect();
    format!("sk_{}_{random}", environment.as_str())
}

/// Creates a key and returns it with its secret.
pub async fn create_key(store: &Store, org: &str, environment: Environment, scopes: &[Scope]) -> anyhow::Result<(ApiKeyRecord, String)> {
    let ids = IdGenerator::default();
    let secret = new_secret(environment);
    let hash = settle_api::auth::hash_secret(&secret);
    let is_new_org = !store.organizations().await.context("reading organizations")?.iter().any(|o| o.name == org);
    let mut record = store.create_api_key(org, environment, &ids.api_key(), &ids.org(), &hash, scopes, SystemClock.now()).await.context("creating the key")?;
    // A new organization starts on the newest API version; existing ones keep their pin.
    if is_new_org {
        store.set_organization_api_version(org, settle_api::versions::NEWEST).await.context("pinning the new organization's API version")?;
        record.api_version = settle_api::versions::NEWEST;
    }
    Ok((record, secret))
}

fn key_json(k: &ApiKeyRecord) -> serde_json::Value {
    serde_json::json!({
        "id": k.id.as_str(),
        "org": k.org_name,
        "org_id": k.org_id.as_str(),
        "environment": k.environment.as_str(),
        "scopes": k.scopes.iter().map(|s| s.as_str()).collect::<Vec<_>>(),
        "created_at": k.created_at.to_rfc3339(),
        "revoked_at": k.revoked_at.map(|t| t.to_rfc3339()),
        "api_version": k.api_version.to_string(),
        "rate_limit": k.rate_limit.map(|l| serde_json::json!({"per_second": l.per_second(), "burst": l.burst()})),
    })
}

pub async fn run(command: KeysCommand) -> anyhow::Result<ExitCode> {
    match command {
        KeysCommand::Create { org, environment, scopes, json, require_signature, db, rate_limit } => {
            let rate_limit = rate_limit.limit()?;
            let environment = Environment::parse(&environment).context("environment must be sandbox or live")?;
            if org.trim().is_empty() || org.chars().count() > 100 {
                bail!("--org must be 1 to 100 characters");
            }
            let scopes: Vec<Scope> = if scopes.is_empty() {
                Scope::ALL.to_vec()
            } else {
                scopes
                    .iter()
                    .map(|s| {
                        Scope::parse(s)
                            .with_context(|| format!("unknown scope {s:?}; known: ledger:read, ledger:write, reconciliation:read, reconciliation:write, events:read, webhooks:read, webhooks:write"))
                    })
                    .collect::<anyhow::Result<_>>()?
            };
            let store = db.open().await?;
            if require_signature {
                return create_signed_key(&store, &db, &org, environment, &scopes, rate_limit, json).await;
            }
            let (mut record, secret) = create_key(&store, &org, environment, &scopes).await?;
            apply_rate_limit(&store, &mut record, rate_limit).await?;
            if json {
                let mut value = key_json(&record);
                value["secret"] = serde_json::Value::String(secret);
                println!("{value}");
            } else {
                println!("created {} for {} ({})", record.id, record.org_name, record.environment.as_str());
                println!("secret (shown only now): {secret}");
            }
            Ok(ExitCode::SUCCESS)
        }
        KeysCommand::List { json, db } => {
            let store = db.open().await?;
            for k in store.list_api_keys().await? {
                if json {
                    println!("{}", key_json(&k));
                } else {
                    let scopes: Vec<&str> = k.scopes.iter().map(|s| s.as_str()).collect();
                    let state = if k.revoked_at.is_some() { "revoked" } else { "active" };
                    let limit = k.rate_limit.map_or_else(|| String::from("default"), |l| format!("{}/s burst {}", l.per_second(), l.burst()));
                    println!("{}\t{}\t{}\t{}\t{}\t{}", k.id, k.org_name, k.environment.as_str(), scopes.join(","), state, limit);
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        KeysCommand::Revoke { id, db } => {
            let id = ApiKeyId::parse(&id).context("not an API key id (key_…)")?;
            let store = db.open().await?;
            if store.revoke_api_key(&id, SystemClock.now()).await? {
                println!("revoked {id}");
                Ok(ExitCode::SUCCESS)
            } else {
                eprintln!("no active key {id}");
                Ok(ExitCode::FAILURE)
            }
        }
    }
}

/// `keys create --require-signature`: the key and its signing secret,
/// encrypted under the master key (created in the data dir on first need),
/// stored in one transaction so a key never exists without its requirement.
/// Gives a just-created key its own rate limit. On failure the key is
/// revoked: its secret was never shown, so nobody can be using it.
async fn apply_rate_limit(store: &Store, record: &mut ApiKeyRecord, limit: Option<RateLimit>) -> anyhow::Result<()> {
    let Some(limit) = limit else { return Ok(()) };
    if let Err(e) = store.set_api_key_rate_limit(&record.id, Some(limit)).await {
        let _ = store.revoke_api_key(&record.id, SystemClock.now()).await;
        return Err(anyhow::Error::new(e).context("setting the key's rate limit"));
    }
    record.rate_limit = Some(limit);
    Ok(())
}

async fn create_signed_key(
    store: &Store,
    db: &DatabaseArgs,
    org: &str,
    environment: Environment,
    scopes: &[Scope],
    rate_limit: Option<RateLimit>,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let variable = std::env::var(MASTER_KEY_VAR).ok();
    let master = MasterKey::load_or_create(variable.as_deref(), &db.data_dir).context("loading the master key")?;
    let ids = IdGenerator::default();
    let key_id = ids.api_key();
    let secret = new_secret(environment);
    let signing_secret = SigningSecret::generate();
    let sealed = master.encrypt(&key_id, &signing_secret).context("encrypting the signing secret")?;
    let hash = settle_api::auth::hash_secret(&secret);
    let mut record =
        store.create_signed_api_key(org, environment, &key_id, &ids.org(), &hash, scopes, &sealed, SystemClock.now()).await.context("creating the key")?;
    apply_rate_limit(store, &mut record, rate_limit).await?;
    if json {
        let mut value = key_json(&record);
        value["secret"] = serde_json::Value::String(secret);
        value["require_signature"] = serde_json::Value::Bool(true);
        value["signing_secret"] = serde_json::Value::String(signing_secret.expose().to_owned());
        println!("{value}");
    } else {
        println!("created {} for {} ({}); its requests must be signed", record.id, record.org_name, record.environment.as_str());
        println!("secret (shown only now): {secret}");
        println!("signing secret (shown only now): {}", signing_secret.expose());
    }
    Ok(ExitCode::SUCCESS)
}
