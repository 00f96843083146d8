//! `TestApp`: the real router over a real store, served on 127.0.0.1:0 and
//! called with reqwest exactly as a client would call it.
//!
//! Each test is written once with [`ledger_test!`] and runs on SQLite always
//! and on PostgreSQL when `SETTLE_TEST_POSTGRES_URL` is set; every PostgreSQL
//! run gets a fresh database of its own, dropped when the test ends.
//!
//! Time comes from a [`ManualClock`] shared by the engine and the handlers,
//! so tests move time instead of sleeping. Rules that hold for every
//! response (a `Request-Id`, the error envelope, never a 5xx) are asserted
//! here, in [`Api::send`], so every test checks them on every call.

use reqwest::Method;
use reqwest::header::HeaderMap;
use serde_json::{Value, json};
use settle_api::AppState;
use settle_api::auth::hash_secret;
use settle_api::operations::OperationsConfig;
use settle_api::operations::worker::WorkerHandle;
use settle_api::signing::Signing;
use settle_api::signing::vault::MasterKey;
use settle_core::clock::{Clock, ManualClock, SystemClock, Timestamp};
use settle_core::ids::IdGenerator;
use settle_core::tenancy::{Environment, Scope};
use settle_store::Store;
use settle_store::engine::EngineConfig;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The variable that names the PostgreSQL server for the PostgreSQL runs.
pub const POSTGRES_URL_VAR: &str = "SETTLE_TEST_POSTGRES_URL";

/// How often the test engine looks for expired holds. Short, so that an
/// expiry test waits milliseconds for the sweep after moving the clock.
const SWEEP_INTERVAL: Duration = Duration::from_millis(25);

/// How long a test polls for background work before it fails.
pub const POLL_DEADLINE: Duration = Duration::from_secs(10);

/// Per-request timeout: a hung server fails the test instead of hanging it.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// Defines one test per backend from one body: `mod NAME { fn sqlite; fn postgres }`.
///
/// The body sees the started app under the name given in parentheses.
/// Attributes (for example `#[ignore = "bug: …"]`) apply to both runs.
macro_rules! ledger_test {
    ($(#[$attr:meta])* async fn $name:ident($app:ident) $body:block) => {
        mod $name {
            #[allow(unused_imports, reason = "each generated module sees what its parent imports")]
            use super::*;

            $(#[$attr])*
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                let $app = $crate::app::TestApp::start($crate::app::Backend::Sqlite).await;
                $body
            }

            $(#[$attr])*
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                let Some($app) = $crate::app::TestApp::start_postgres_if_configured().await else {
                    return;
                };
                $body
            }
        }
    };
}
pub(crate) use ledger_test;

/// A fresh PostgreSQL database `settle_api_t_<random>`, created through the
/// server's `postgres` database and dropped `WITH (FORCE)` on drop.
pub struct PgDatabase {
    pub url: String,
    admin_url: String,
    name: String,
}

impl PgDatabase {
    async fn create(base_url: &str) -> PgDatabase {
        let (root, query) = match base_url.split_once('?') {
            Some((root, query)) => (root, format!("?{query}")),
            None => (base_url, String::new()),
        };
        let server = match root.rsplit_once('/') {
            Some((server, _database)) if server.contains("//") && !server.ends_with('/') => server,
            _ => root.trim_end_matches('/'),
        };
        let admin_url = format!("{server}/postgres{query}");
        // A ULID body is 26 lower-case alphanumerics: a valid bare identifier.
        let suffix = IdGenerator::default().transaction().as_str().trim_start_matches("ltx_").to_owned();
        let name = format!("settle_api_t_{suffix}");
        let (client, connection) = tokio_postgres::connect(&admin_url, tokio_postgres::NoTls)
            .await
            .unwrap_or_else(|e| panic!("{POSTGRES_URL_VAR} is set but {admin_url} is unreachable: {e}"));
        tokio::spawn(connection);
        client.batch_execute(&format!("CREATE DATABASE {name}")).await.expect("creating the test database");
        PgDatabase { url: format!("{server}/{name}{query}"), admin_url, name }
    }
}

impl Drop for PgDatabase {
    fn drop(&mut self) {
        let (admin_url, name) = (self.admin_url.clone(), self.name.clone());
        // Drop runs inside the test's runtime, which cannot be blocked on:
        // drop the database from a thread with a runtime of its own.
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a runtime to drop the test database");
            runtime.block_on(async move {
                let (client, connection) = tokio_postgres::connect(&admin_url, tokio_postgres::NoTls).await.expect("connecting to drop the test database");
                tokio::spawn(connection);
                client.batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")).await.expect("dropping the test database");
            });
        })
        .join();
        if dropped.is_err() && !std::thread::panicking() {
            panic!("could not drop test database {}", self.name);
        }
    }
}

/// One answer from the server.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: HeaderMap,
    /// The body as JSON (`Value::Null` when it is not JSON).
    pub body: Value,
    pub bytes: Vec<u8>,
}

impl Reply {
    /// `error.code`, or "" on a success.
    pub fn code(&self) -> &str {
        self.body["error"]["code"].as_str().unwrap_or("")
    }

    /// `error.param` (None when null or absent).
    pub fn param(&self) -> Option<&str> {
        self.body["error"]["param"].as_str()
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The `id` of the returned object.
    #[track_caller]
    pub fn id(&self) -> String {
        self.body["id"].as_str().unwrap_or_else(|| panic!("no id in {} {}", self.status, self.body)).to_owned()
    }

    /// Asserts the status, showing the body when it differs.
    #[track_caller]
    pub fn expect_status(&self, status: u16) -> &Reply {
        assert_eq!(self.status, status, "unexpected status; body: {}", self.body);
        self
    }

    /// Asserts an error status and code, showing the body when they differ.
    #[track_caller]
    pub fn expect_error(&self, status: u16, code: &str) -> &Reply {
        assert_eq!((self.status, self.code()), (status, code), "unexpected answer; body: {}", self.body);
        self
    }

    /// The error body without its `request_id`, to compare two errors' shapes.
    pub fn error_without_request_id(&self) -> Value {
        let mut body = self.body.clone();
        if let Some(error) = body.get_mut("error").and_then(Value::as_object_mut) {
            error.remove("request_id");
        }
        body
    }
}

/// Balances as `GET /v1/accounts/{id}` shows them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Balances {
    pub posted: i64,
    pub pending: i64,
    pub available: i64,
}

impl Balances {
    pub fn of(body: &Value) -> Balances {
        let field = |name: &str| body["balances"][name].as_i64().unwrap_or_else(|| panic!("no balances.{name} in {body}"));
        Balances { posted: field("posted"), pending: field("pending"), available: field("available") }
    }
}

/// A client bound to one server and one API key. Cheap to clone.
#[derive(Clone)]
pub struct Api {
    pub url: String,
    pub key: Option<String>,
    http: reqwest::Client,
}

impl Api {
    /// The same server with another key (`None`: no `Authorization` header).
    pub fn with_key(&self, key: Option<&str>) -> Api {
        Api { url: self.url.clone(), key: key.map(str::to_owned), http: self.http.clone() }
    }

    /// The same server and key, every request sent with `Settle-Version: version`.
    pub fn with_version(&self, version: &str) -> Api {
        let mut headers = HeaderMap::new();
        headers.insert("settle-version", version.parse().expect("a header value"));
        let http = crate::tls_builder().timeout(REQUEST_TIMEOUT).default_headers(headers).build().expect("an HTTP client");
        Api { url: self.url.clone(), key: self.key.clone(), http }
    }

    /// The same key against another server.
    pub fn with_url(&self, url: &str) -> Api {
        Api { url: url.to_owned(), key: self.key.clone(), http: self.http.clone() }
    }

    /// A request to `path` carrying this client's key.
    pub fn request(&self, method: Method, path: &str) -> reqwest::RequestBuilder {
        let builder = self.http.request(method, format!("{}{path}", self.url));
        match &self.key {
            Some(key) => builder.bearer_auth(key),
            None => builder,
        }
    }

    /// Sends and checks what every response must satisfy: a `Request-Id`;
    /// never a 5xx; on an error, the envelope with exactly `type`, `code`,
    /// `message`, `param` and `request_id`, which names this request (or,
    /// on an idempotent replay, the request that first produced it).
    #[track_caller]
    pub fn send(&self, request: reqwest::RequestBuilder) -> impl Future<Output = Reply> + Send + 'static {
        let caller = std::panic::Location::caller();
        async move {
            let response = request.send().await.unwrap_or_else(|e| panic!("request failed at {caller}: {e}"));
            let status = response.status().as_u16();
            let headers = response.headers().clone();
            let bytes = response.bytes().await.unwrap_or_else(|e| panic!("reading body failed at {caller}: {e}")).to_vec();
            let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
            let reply = Reply { status, headers, body, bytes };
            check_universal_rules(&reply, caller);
            reply
        }
    }

    #[track_caller]
    pub fn get(&self, path: &str) -> impl Future<Output = Reply> + Send + 'static {
        self.send(self.request(Method::GET, path))
    }

    #[track_caller]
    pub fn post(&self, path: &str, body: &Value) -> impl Future<Output = Reply> + Send + 'static {
        self.send(self.request(Method::POST, path).json(body))
    }

    /// POST with an `Idempotency-Key`.
    #[track_caller]
    pub fn post_idempotent(&self, path: &str, key: &str, body: &Value) -> impl Future<Output = Reply> + Send + 'static {
        self.send(self.request(Method::POST, path).header("Idempotency-Key", key).json(body))
    }

    /// POST of raw bytes declared as JSON.
    #[track_caller]
    pub fn post_raw(&self, path: &str, bytes: Vec<u8>) -> impl Future<Output = Reply> + Send + 'static {
        self.send(self.request(Method::POST, path).header("content-type", "application/json").body(bytes))
    }

    /// Opens a USD account and returns its id.
    pub async fn account(&self, normal_balance: &str, min_available_balance: Option<i64>) -> String {
        self.account_with(json!({"name": "test", "currency": "USD", "normal_balance": normal_balance, "min_available_balance": min_available_balance})).await
    }

    /// Opens an account from a full request body and returns its id.
    pub async fn account_with(&self, body: Value) -> String {
        let reply = self.post("/v1/accounts", &body).await;
        reply.expect_status(201);
        reply.id()
    }

    /// `GET /v1/accounts/{id}`, which must answer 200.
    pub async fn account_json(&self, id: &str) -> Value {
        let reply = self.get(&format!("/v1/accounts/{id}")).await;
        reply.expect_status(200);
        reply.body
    }

    pub async fn balances(&self, id: &str) -> Balances {
        Balances::of(&self.account_json(id).await)
    }

    pub async fn version(&self, id: &str) -> i64 {
        let body = self.account_json(id).await;
        body["version"].as_i64().unwrap_or_else(|| panic!("no version in {body}"))
    }

    /// `POST /v1/transactions` moving `amount` from `from` (debit) to `to` (credit).
    pub async fn transfer(&self, from: &str, to: &str, amount: i64) -> Reply {
        self.post("/v1/transactions", &transfer_body(from, to, amount)).await
    }

    /// A transfer that must succeed; returns the transaction id.
    pub async fn transfer_ok(&self, from: &str, to: &str, amount: i64) -> String {
        let reply = self.transfer(from, to, amount).await;
        reply.expect_status(201);
        reply.id()
    }

    /// A hold (pending transaction) that must succeed; returns its id.
    pub async fn hold_ok(&self, from: &str, to: &str, amount: i64) -> String {
        let mut body = transfer_body(from, to, amount);
        body["status"] = json!("pending");
        let reply = self.post("/v1/transactions", &body).await;
        reply.expect_status(201);
        assert_eq!(reply.body["status"], "pending", "{}", reply.body);
        reply.id()
    }

    /// Every item of a list endpoint, following `starting_after` to the end.
    pub async fn list_all(&self, path: &str) -> Vec<Value> {
        let separator = if path.contains('?') { '&' } else { '?' };
        let mut items: Vec<Value> = Vec::new();
        let mut after: Option<String> = None;
        for _ in 0..10_000 {
            let page_path = match &after {
                None => format!("{path}{separator}limit=100"),
                Some(id) => format!("{path}{separator}limit=100&starting_after={id}"),
            };
            let reply = self.get(&page_path).await;
            reply.expect_status(200);
            let data = reply.body["data"].as_array().unwrap_or_else(|| panic!("no data in {}", reply.body)).clone();
            after = data.last().and_then(|last| last["id"].as_str()).map(str::to_owned);
            items.extend(data);
            if reply.body["has_more"] != json!(true) {
                return items;
            }
        }
        panic!("list {path} did not end");
    }
}

#[track_caller]
fn check_universal_rules(reply: &Reply, caller: &std::panic::Location<'_>) {
    let request_id = reply.header("request-id").unwrap_or_else(|| panic!("no Request-Id on a {} answer (call at {caller})", reply.status));
    assert!(request_id.starts_with("req_") && request_id.len() > 4, "odd Request-Id {request_id:?} (call at {caller})");
    assert!(reply.status < 500, "a {} is always a bug (call at {caller}); body: {}", reply.status, String::from_utf8_lossy(&reply.bytes));
    if reply.status < 400 {
        return;
    }
    let error = reply.body["error"]
        .as_object()
        .unwrap_or_else(|| panic!("a {} without the error envelope (call at {caller}): {:?}", reply.status, String::from_utf8_lossy(&reply.bytes)));
    let mut fields: Vec<&str> = error.keys().map(String::as_str).collect();
    fields.sort_unstable();
    assert_eq!(fields, ["code", "message", "param", "request_id", "type"], "error fields (call at {caller}): {}", reply.body);
    assert_eq!(reply.body.as_object().map(serde_json::Map::len), Some(1), "nothing beside `error` (call at {caller}): {}", reply.body);
    for field in ["type", "code", "message"] {
        assert!(error[field].as_str().is_some_and(|s| !s.is_empty()), "error.{field} must be a non-empty string (call at {caller}): {}", reply.body);
    }
    assert!(error["param"].is_null() || error["param"].is_string(), "error.param must be a string or null (call at {caller}): {}", reply.body);
    let replayed = reply.header("idempotent-replayed") == Some("true");
    if replayed {
        assert!(error["request_id"].as_str().is_some_and(|id| id.starts_with("req_")), "replayed error names its first request: {}", reply.body);
    } else {
        assert_eq!(error["request_id"].as_str(), Some(request_id), "error.request_id names this request (call at {caller})");
    }
}

/// A two-entry transfer body.
pub fn transfer_body(from: &str, to: &str, amount: i64) -> Value {
    json!({"entries": [
        {"account_id": from, "direction": "debit", "amount": amount},
        {"account_id": to, "direction": "credit", "amount": amount},
    ]})
}

/// Polls `check` until it returns `Some`, failing after [`POLL_DEADLINE`].
pub async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + POLL_DEADLINE;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out after {POLL_DEADLINE:?} waiting for {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// How [`TestApp::start_with`] and [`TestApp::restart`] set up the server.
#[derive(Clone, Debug)]
pub struct TestOptions {
    /// Whether the operation worker runs (off: operations stay `pending`).
    pub worker: bool,
    pub operations: OperationsConfig,
    /// Adjusts the server's state (for example a test-only deprecated endpoint).
    pub configure: fn(AppState) -> AppState,
    /// Whether the event projector and the webhook delivery worker run.
    pub events: bool,
    pub webhooks: settle_api::webhooks::worker::WebhookConfig,
}

impl Default for TestOptions {
    fn default() -> Self {
        // A short poll, so that work another "server" left behind is found in milliseconds.
        TestOptions {
            worker: true,
            operations: OperationsConfig { poll_interval: Duration::from_millis(20), ..OperationsConfig::default() },
            configure: |state| state,
            events: true,
            webhooks: settle_api::webhooks::worker::WebhookConfig {
                poll_interval: Duration::from_millis(20),
                attempt_timeout: Duration::from_secs(5),
                ..settle_api::webhooks::worker::WebhookConfig::default()
            },
        }
    }
}

/// A running server over a fresh store. Stops (and drops its database) on drop.
pub struct TestApp {
    /// Organization "acme", sandbox, every scope.
    pub api: Api,
    /// The clock the engine and the handlers read.
    pub clock: ManualClock,
    pub store: Store,
    /// The master key this server decrypts signing secrets with.
    pub master_key: MasterKey,
    /// The customer keyring file (in the data dir) and the server's keyring.
    pub keyring_path: std::path::PathBuf,
    pub keyring: Arc<settle_api::customers::keyring::Keyring>,
    /// The server's in-memory deprecation counts (flush them into `store` to read them back).
    pub deprecation_usage: Arc<settle_api::deprecation::DeprecationCounter>,
    /// The server's state, for tests that drive its parts directly.
    pub state: AppState,
    server: tokio::task::JoinHandle<()>,
    worker: Option<WorkerHandle>,
    background: Option<Background>,
    // Dropped after the server task is aborted (fields drop in this order).
    _dir: tempfile::TempDir,
    _database: Option<PgDatabase>,
}

impl std::ops::Deref for TestApp {
    type Target = Api;

    fn deref(&self) -> &Api {
        &self.api
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.server.abort();
        if let Some(worker) = self.worker.take() {
            worker.abort();
        }
        if let Some(background) = self.background.take() {
            background.abort();
        }
    }
}

/// The event projector and the webhook delivery worker of a test server.
pub struct Background {
    projector: settle_api::events::projector::ProjectorHandle,
    deliveries: settle_api::webhooks::worker::DeliveryHandle,
}

impl Background {
    fn start(state: &AppState) -> Background {
        let config = settle_api::events::projector::ProjectorConfig { poll_interval: Duration::from_millis(20), ..Default::default() };
        Background { projector: settle_api::events::projector::spawn(state.clone(), config), deliveries: settle_api::webhooks::worker::spawn(state.clone()) }
    }

    /// As a crash would: leases stay held until they lapse.
    pub fn abort(self) {
        self.projector.abort();
        self.deliveries.abort();
    }
}

impl TestApp {
    /// The PostgreSQL run, or `None` (the test passes vacuously) when
    /// `SETTLE_TEST_POSTGRES_URL` is not set.
    pub async fn start_postgres_if_configured() -> Option<TestApp> {
        if std::env::var(POSTGRES_URL_VAR).is_err() {
            eprintln!("skipped: {POSTGRES_URL_VAR} is not set");
            return None;
        }
        Some(TestApp::start(Backend::Postgres).await)
    }

    pub async fn start(backend: Backend) -> TestApp {
        TestApp::start_with(backend, TestOptions::default()).await
    }

    /// Starts an engine, the router on a fresh port and (per `options`) the
    /// operation worker over `store`: a server process, as far as the store can tell.
    async fn serve(
        store: &Store,
        clock: &ManualClock,
        master_key: &MasterKey,
        keyring: &Arc<settle_api::customers::keyring::Keyring>,
        options: &TestOptions,
    ) -> (AppState, tokio::task::JoinHandle<()>, String, Option<WorkerHandle>, Option<Background>) {
        let shared: Arc<dyn Clock> = Arc::new(clock.clone());
        let metrics = Arc::new(settle_api::metrics::Metrics::default());
        let hub = settle_api::events::Hub::default();
        let observer: Arc<dyn settle_store::engine::BatchObserver> =
            Arc::new(settle_api::events::CommitSignal { inner: Some(metrics.clone()), hub: Arc::clone(&hub) });
        let config = EngineConfig { sweep_interval: SWEEP_INTERVAL, observer: Some(observer), ..EngineConfig::default() };
        let (engine, _engine_task) = store.start_engine(Arc::clone(&shared), Arc::new(IdGenerator::default()), config).await.expect("starting the engine");
        let state = AppState::new(store.clone(), engine, shared)
            .with_signing(Signing::new(Some(master_key.clone()), None))
            .with_operations(options.operations.clone())
            .with_metrics(metrics)
            .with_events(hub)
            .with_webhooks(settle_api::webhooks::Webhooks::new(options.webhooks.clone()).expect("a webhook HTTP client"))
            .with_customers(settle_api::customers::Customers::with_keyring(Arc::clone(keyring)));
        let state = (options.configure)(state);
        let worker = options.worker.then(|| settle_api::operations::worker::spawn(state.clone()));
        let background = options.events.then(|| Background::start(&state));
        let router = settle_api::router(state.clone()).merge(settle_api::metrics::router(state.clone()));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("binding a port");
        let address = listener.local_addr().expect("the bound address");
        let server = tokio::spawn(async move {
            axum::serve(listener, router.into_make_service_with_connect_info::<std::net::SocketAddr>()).await.expect("serving");
        });
        (state, server, format!("http://{address}"), worker, background)
    }

    /// Stops this server as a crash would (its worker ends mid-step, leases
    /// stay held) and starts a new one over the same database and clock.
    /// The client (and its API key) now talks to the new server.
    pub async fn restart(&mut self, options: TestOptions) {
        self.server.abort();
        if let Some(worker) = self.worker.take() {
            worker.abort();
        }
        if let Some(background) = self.background.take() {
            background.abort();
        }
        let (state, server, url, worker, background) = TestApp::serve(&self.store, &self.clock, &self.master_key, &self.keyring, &options).await;
        // A new client, so that no kept-alive connection reaches the old server.
        let http = crate::tls_builder().timeout(REQUEST_TIMEOUT).build().expect("an HTTP client");
        self.api = Api { url, key: self.api.key.clone(), http };
        self.deprecation_usage = Arc::clone(&state.deprecation_usage);
        (self.state, self.server, self.worker, self.background) = (state, server, worker, background);
    }

    pub async fn start_with(backend: Backend, options: TestOptions) -> TestApp {
        let dir = tempfile::tempdir().expect("a temporary data dir");
        let database = match backend {
            Backend::Sqlite => None,
            Backend::Postgres => {
                let base = std::env::var(POSTGRES_URL_VAR).unwrap_or_else(|_| panic!("{POSTGRES_URL_VAR} is required for the PostgreSQL run"));
                Some(PgDatabase::create(&base).await)
            }
        };
        let store = Store::open(database.as_ref().map(|d| d.url.as_str()), dir.path()).await.expect("opening the store");
        store.migrate().await.expect("migrating the store");
        // Whole seconds, so that instants the tests compute print simply.
        let start = SystemClock.now().micros() / 1_000_000 * 1_000_000;
        let clock = ManualClock::new(Timestamp::from_micros(start));
        let master_key = MasterKey::generate();
        let keyring_path = dir.path().join(settle_api::customers::keyring::KEYRING_FILE);
        let keyring = Arc::new(settle_api::customers::keyring::Keyring::load_or_create(&keyring_path).expect("a customer keyring"));
        let (state, server, url, worker, background) = TestApp::serve(&store, &clock, &master_key, &keyring, &options).await;
        let deprecation_usage = Arc::clone(&state.deprecation_usage);
        let http = crate::tls_builder().timeout(REQUEST_TIMEOUT).build().expect("an HTTP client");
        let mut app = TestApp {
            api: Api { url, key: None, http },
            clock,
            store,
            master_key,
            keyring_path,
            keyring,
            deprecation_usage,
            state,
            server,
            worker,
            background,
            _dir: dir,
            _database: database,
        };
        let key = app.key("acme", Environment::Sandbox, &Scope::ALL).await;
        app.api.key = Some(key);
        app
    }

    /// Creates an API key (and its organization when new); returns the secret.
    pub async fn key(&self, org: &str, environment: Environment, scopes: &[Scope]) -> String {
        let ids = IdGenerator::default();
        let random = |ids: &IdGenerator| ids.transaction().as_str().trim_start_matches("ltx_").to_owned();
        let secret = format!("sk_{}_{}{}", environment.as_str(), random(&ids), random(&ids));
        self.store
            .create_api_key(org, environment, &ids.api_key(), &ids.org(), &hash_secret(&secret), scopes, self.clock.now())
            .await
            .expect("creating an API key");
        secret
    }

    /// A client for a new key of `org` (sandbox, every scope).
    pub async fn client_for(&self, org: &str) -> Api {
        let key = self.key(org, Environment::Sandbox, &Scope::ALL).await;
        self.api.with_key(Some(&key))
    }

    /// Now, as the server sees it.
    pub fn now(&self) -> Timestamp {
        self.clock.now()
    }

    /// A second server on the same database (its own store handle, engine
    /// and router, the same clock and master key), as a second process
    /// sharing PostgreSQL (or the SQLite file) would be. It stops when the
    /// returned handle is dropped.
    pub async fn another_server(&self) -> (Api, ServerHandle) {
        let url = self._database.as_ref().map(|d| d.url.clone());
        let store = Store::open(url.as_deref(), self._dir.path()).await.expect("opening the store again");
        let shared: Arc<dyn Clock> = Arc::new(self.clock.clone());
        let config = EngineConfig { sweep_interval: SWEEP_INTERVAL, ..EngineConfig::default() };
        let (engine, _engine_task) = store.start_engine(Arc::clone(&shared), Arc::new(IdGenerator::default()), config).await.expect("starting the engine");
        let state = AppState::new(store, engine, shared).with_signing(Signing::new(Some(self.master_key.clone()), None));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("binding a port");
        let address = listener.local_addr().expect("the bound address");
        let server = tokio::spawn(async move {
            axum::serve(listener, settle_api::router(state).into_make_service_with_connect_info::<std::net::SocketAddr>()).await.expect("serving");
        });
        (self.api.with_url(&format!("http://{address}")), ServerHandle(server))
    }
}

/// Stops a server started by [`TestApp::another_server`] when dropped.
pub struct ServerHandle(tokio::task::JoinHandle<()>);

impl Drop for ServerHandle {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// A server started with [`TestApp::start_with_http`] or [`TestApp::second_server`]:
/// its own router and engine, stopped on drop.
pub struct ExtraServer {
    pub api: Api,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for ExtraServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Serves `router` on 127.0.0.1:0 with connection info (the client IP that
/// unauthenticated rate limits key on); returns its URL and task.
async fn serve_with_connect_info(router: axum::Router) -> (String, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("binding a port");
    let address = listener.local_addr().expect("the bound address");
    let task = tokio::spawn(async move {
        axum::serve(listener, router.into_make_service_with_connect_info::<std::net::SocketAddr>()).await.expect("serving");
    });
    (format!("http://{address}"), task)
}

impl TestApp {
    /// Like [`TestApp::start`], with an HTTP policy (rate limits, timeout,
    /// CORS, headers) and an engine queue of `queue_capacity` commands. The
    /// returned app's `api` talks to that server.
    pub async fn start_with_http(backend: Backend, http: settle_api::hygiene::HttpPolicy, queue_capacity: usize) -> (TestApp, ExtraServer) {
        let app = TestApp::start(backend).await;
        let server = app.server_with(http, queue_capacity).await;
        (app, server)
    }

    /// Another server (router, engine, HTTP policy) over this app's store,
    /// using this app's key: as a second `settle serve` process would.
    pub async fn second_server(&self, http: settle_api::hygiene::HttpPolicy) -> ExtraServer {
        self.server_with(http, settle_store::engine::QUEUE_CAPACITY).await
    }

    async fn server_with(&self, http: settle_api::hygiene::HttpPolicy, queue_capacity: usize) -> ExtraServer {
        let shared: Arc<dyn Clock> = Arc::new(self.clock.clone());
        let config = EngineConfig { sweep_interval: SWEEP_INTERVAL, queue_capacity, ..EngineConfig::default() };
        let (engine, _engine_task) = self.store.start_engine(Arc::clone(&shared), Arc::new(IdGenerator::default()), config).await.expect("starting the engine");
        let router = settle_api::router(AppState::new(self.store.clone(), engine, shared).with_http(http));
        let (url, task) = serve_with_connect_info(router).await;
        ExtraServer { api: self.api.with_url(&url), task }
    }
}
