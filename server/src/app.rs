//! An application built on Portcullis: what it adds to the auth server, declared once.
//!
//! [`App`] describes the application: its name, its own settings, its own migrations and
//! its own poem-openapi routes. The library does the rest: accounts, sessions, the account
//! page, the command line (`serve`, `migrate`, `config`, `sessions …`), and the guard in
//! front of every protected route, the application's included. A generated backend's
//! `main` is a few lines:
//!
//! ```no_run
//! use portcullis_server::{App, Services};
//! # #[derive(Clone)] struct NotesApi(Services);
//! # #[poem_openapi::OpenApi] impl NotesApi {
//! #     #[oai(path = "/notes", method = "get")] async fn list(&self) {}
//! # }
//! # mod embedded { pub mod migrations { pub fn runner() -> refinery::Runner { refinery::Runner::new(&[]) } } }
//!
//! fn main() -> std::process::ExitCode {
//!     App::new(env!("CARGO_PKG_NAME"), env!("CARGO_PKG_VERSION"))
//!         .migrations(embedded::migrations::runner)
//!         .api(|services| Ok(NotesApi(services.clone())))
//!         .main()
//! }
//! ```

use std::fmt;
use std::process::ExitCode;
use std::sync::Arc;

use deadpool_postgres::Pool;
use poem_openapi::OpenApi;

use crate::config::settings::Setting;
use crate::config::{AppSettings, Config, ConfigError, STANDALONE_NAME};

/// Builds the application's routes from what the server shares with them; an error (a
/// setting of the application's that does not parse) stops start-up.
type ApiFactory<Api> = dyn Fn(&Services) -> Result<Api, ConfigError> + Send + Sync;

/// An application on Portcullis: the auth server plus what the application adds.
///
/// `Api` is the application's own poem-openapi routes (`()` for none): they go into the
/// same OpenAPI document as the server's and sit behind the same guard, reading the caller
/// from [`Authenticated`](crate::Authenticated).
pub struct App<Api = ()> {
    name: &'static str,
    version: &'static str,
    title: &'static str,
    settings: Vec<&'static Setting>,
    migrations: Option<fn() -> refinery::Runner>,
    api: Arc<ApiFactory<Api>>,
}

impl App<()> {
    /// An application called `name` (its binary's name, as its log lines and `--help`
    /// show it; also what its database, token issuer and mail sender default to), at
    /// `version` (the OpenAPI document's).
    pub fn new(name: &'static str, version: &'static str) -> Self {
        Self {
            name,
            version,
            title: name,
            settings: Vec::new(),
            migrations: None,
            api: Arc::new(|_| Ok(())),
        }
    }

    /// The auth server alone: the `portcullis-server` binary.
    pub fn standalone() -> Self {
        Self::new(STANDALONE_NAME, env!("CARGO_PKG_VERSION")).title("Portcullis")
    }
}

impl<Api> App<Api> {
    /// The OpenAPI document's title (the name, unless set).
    #[must_use]
    pub fn title(mut self, title: &'static str) -> Self {
        self.title = title;
        self
    }

    /// Declares the application's own settings (environment variables), read and checked
    /// at start-up with Portcullis's own: a bad value stops the server naming the variable,
    /// and `config` prints them. Read them in [`api`](Self::api) from
    /// [`Services::settings`].
    #[must_use]
    pub fn settings(mut self, settings: &[&'static Setting]) -> Self {
        self.settings.extend_from_slice(settings);
        self
    }

    /// The application's own migrations (refinery's `embed_migrations!` runner), applied
    /// after Portcullis's under the same advisory lock, recorded in a history table of
    /// their own (`app_schema_history`), so the two sets number their steps independently.
    #[must_use]
    pub fn migrations(mut self, runner: fn() -> refinery::Runner) -> Self {
        self.migrations = Some(runner);
        self
    }

    /// The application's own routes: `api` builds them from what the server shares. It is
    /// called at start-up, where an error stops the server, and again whenever the routes
    /// or the OpenAPI document are built.
    #[must_use]
    pub fn api<Own>(
        self,
        api: impl Fn(&Services) -> Result<Own, ConfigError> + Send + Sync + 'static,
    ) -> App<Own>
    where
        Own: OpenApi + 'static,
    {
        App {
            name: self.name,
            version: self.version,
            title: self.title,
            settings: self.settings,
            migrations: self.migrations,
            api: Arc::new(api),
        }
    }

    /// The application's name.
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// The application's version.
    pub fn version(&self) -> &'static str {
        self.version
    }

    /// The OpenAPI document's title.
    pub(crate) fn openapi_title(&self) -> &'static str {
        self.title
    }

    /// The settings the application declared.
    pub fn declared_settings(&self) -> &[&'static Setting] {
        &self.settings
    }

    /// Reads the configuration, Portcullis's and the application's, through `lookup`.
    pub fn config_from_lookup(
        &self,
        lookup: impl Fn(&str) -> Option<std::ffi::OsString>,
    ) -> Result<Config, ConfigError> {
        Config::from_lookup(self.name, &self.settings, lookup)
    }

    /// Reads the configuration from the process environment.
    pub fn config_from_env(&self) -> Result<Config, ConfigError> {
        self.config_from_lookup(|name| std::env::var_os(name))
    }

    /// The application's migrations, if it has any.
    pub(crate) fn migration_runner(&self) -> Option<refinery::Runner> {
        self.migrations.map(|runner| runner())
    }

    /// The application's routes over `services`.
    pub(crate) fn build_api(&self, services: &Services) -> Result<Api, ConfigError> {
        (self.api)(services)
    }

    /// Runs the command line: parses the arguments, reads the configuration and does
    /// what they ask (serve by default). What the application's `main` returns.
    #[must_use]
    pub fn main(self) -> ExitCode
    where
        Api: OpenApi + 'static,
    {
        crate::cli::main(&self)
    }
}

impl<Api> Clone for App<Api> {
    fn clone(&self) -> Self {
        Self {
            name: self.name,
            version: self.version,
            title: self.title,
            settings: self.settings.clone(),
            migrations: self.migrations,
            api: Arc::clone(&self.api),
        }
    }
}

impl<Api> fmt::Debug for App<Api> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("App")
            .field("name", &self.name)
            .field("version", &self.version)
            .field(
                "settings",
                &self.settings.iter().map(|s| s.name).collect::<Vec<_>>(),
            )
            .field("migrations", &self.migrations.is_some())
            .finish_non_exhaustive()
    }
}

/// What the server shares with an application's routes: the database pool and the
/// configuration, the application's own settings included. Cheap to clone.
#[derive(Clone)]
pub struct Services {
    pool: Pool,
    config: Arc<Config>,
}

impl Services {
    pub(crate) fn new(pool: Pool, config: Arc<Config>) -> Self {
        Self { pool, config }
    }

    /// The connection pool to the server's database, where the application's own tables
    /// live beside Portcullis's.
    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    /// The application's own settings, as it declared them ([`App::settings`]).
    pub fn settings(&self) -> &AppSettings {
        &self.config.application
    }

    /// The whole configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }
}

impl fmt::Debug for Services {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Services")
            .field("app", &self.config.app_name)
            .finish_non_exhaustive()
    }
}
