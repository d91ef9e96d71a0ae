//! Builds the application: the route table, middleware, and the two
//! listeners (public API, internal metrics). `Application::build` binds before
//! it returns, so tests pass port 0 and read the real port back. The state
//! every handler shares lives in [`crate::state`], which no handler needs
//! this file for.

use std::net::TcpListener;
use std::sync::Arc;
use std::time::Duration;

use actix_web::dev::Server;
use actix_web::middleware::from_fn;
use actix_web::{App, HttpRequest, HttpResponse, HttpServer, guard, web};
use utoipa::OpenApi;
use utoipa_actix_web::AppExt;
use utoipa_swagger_ui::SwaggerUi;

use crate::config::Settings;
use crate::error::{ApiError, json_error_handler, path_error_handler, query_error_handler};
use crate::metrics::Metrics;
use crate::openapi::ApiDoc;
use crate::state::AppState;
use crate::{auth, bootstrap, health, products, purchases, telemetry, users};

/// A bound, not yet running, instance.
pub struct Application {
    port: u16,
    metrics_port: u16,
    state: web::Data<AppState>,
    server: Server,
    metrics_server: Server,
}

impl std::fmt::Debug for Application {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Application")
            .field("port", &self.port)
            .field("metrics_port", &self.metrics_port)
            .finish()
    }
}

impl Application {
    /// Connects nothing yet (Redis is found in the background), binds both
    /// listeners, and starts creating the bootstrap admin.
    pub async fn build(settings: Settings) -> std::io::Result<Self> {
        let metrics = Metrics::new();
        let state = web::Data::new(AppState::new(&settings, metrics.clone()));
        {
            let state = state.clone();
            let admin = settings.bootstrap_admin.clone();
            tokio::spawn(async move {
                state.redis.refresh_topology().await;
                bootstrap::ensure_admin(&state, &admin).await;
                state.finish_bootstrap();
            });
        }

        let listener = TcpListener::bind((settings.server.host.as_str(), settings.server.port))?;
        let port = listener.local_addr()?.port();
        let metrics_listener =
            TcpListener::bind((settings.server.host.as_str(), settings.server.metrics_port))?;
        let metrics_port = metrics_listener.local_addr()?.port();

        let json_limit = settings.server.json_body_limit_bytes;
        let http_metrics = metrics.http_middleware();
        let app_state = state.clone();
        let mut server = HttpServer::new(move || {
            app(app_state.clone(), json_limit)
                .wrap(http_metrics.clone())
                .wrap(from_fn(telemetry::request_log))
        })
        .listen(listener)?
        .shutdown_timeout(settings.server.shutdown_timeout_secs)
        .client_request_timeout(Duration::from_secs(10))
        // Longer than nginx keeps an idle upstream connection (60 s): the
        // proxy closes first. Were the API to close it (actix's default is
        // 5 s) just as nginx reuses it, a POST on it would fail with a 502
        // (nginx never resends one).
        .keep_alive(Duration::from_secs(75));
        if settings.server.workers > 0 {
            server = server.workers(settings.server.workers);
        }

        let exported = metrics.clone();
        let metrics_server = HttpServer::new(move || {
            let exported = exported.clone();
            App::new().route(
                "/metrics",
                web::get().to(move || {
                    let body = exported.render();
                    async move {
                        HttpResponse::Ok()
                            .content_type("text/plain; version=0.0.4")
                            .body(body)
                    }
                }),
            )
        })
        .workers(1)
        .listen(metrics_listener)?
        .shutdown_timeout(1);

        Ok(Self {
            port,
            metrics_port,
            state,
            server: server.run(),
            metrics_server: metrics_server.run(),
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn metrics_port(&self) -> u16 {
        self.metrics_port
    }

    pub fn state(&self) -> Arc<AppState> {
        self.state.clone().into_inner()
    }

    /// Serves until SIGTERM/SIGINT (actix handles the signals and drains).
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        // An actix `Server` only accepts connections while it is polled: the
        // metrics listener runs beside the API and stops with it.
        let metrics = self.metrics_server.handle();
        let metrics_task = tokio::spawn(self.metrics_server);
        let result = self.server.await;
        metrics.stop(true).await;
        let _ = metrics_task.await;
        result
    }
}

/// Where the generated OpenAPI document is served.
const OPENAPI_PATH: &str = "/api/v1/openapi.json";
/// Prefix of the Swagger UI pages.
const DOCS_PREFIX: &str = "/api/v1/docs/";

fn is_docs_path(path: &str) -> bool {
    path == OPENAPI_PATH || path.starts_with(DOCS_PREFIX)
}

/// The application factory each of the server's workers calls.
pub fn app(
    state: web::Data<AppState>,
    json_limit: usize,
) -> App<
    impl actix_web::dev::ServiceFactory<
        actix_web::dev::ServiceRequest,
        Config = (),
        Response = actix_web::dev::ServiceResponse,
        Error = actix_web::Error,
        InitError = (),
    >,
> {
    let currency = state.store.currency.clone();
    let (app, mut api) = App::new()
        .into_utoipa_app()
        .openapi(ApiDoc::openapi())
        .app_data(state.trusted_proxies.clone())
        .app_data(state)
        .app_data(
            web::JsonConfig::default()
                .limit(json_limit)
                .error_handler(json_error_handler(json_limit)),
        )
        .app_data(web::QueryConfig::default().error_handler(query_error_handler))
        .app_data(web::PathConfig::default().error_handler(path_error_handler))
        .configure(health::configure)
        .service(
            utoipa_actix_web::scope("/api/v1")
                // A scope that matches its prefix answers 404 for any path it
                // lacks, so it must let the docs (registered after it) through.
                .guard(guard::fn_guard(|context| {
                    !is_docs_path(context.head().uri.path())
                }))
                .configure(auth::configure)
                .configure(users::configure)
                .configure(products::configure)
                .configure(purchases::configure),
        )
        .split_for_parts();
    crate::openapi::complete(&mut api, &currency);
    let methods = std::sync::Arc::new(crate::openapi::MethodTable::new(&api));
    app.service(SwaggerUi::new(format!("{DOCS_PREFIX}{{_:.*}}")).url(OPENAPI_PATH, api))
        .default_service(web::to(move |request: HttpRequest| {
            let allowed = methods.allowed(request.path()).map(str::to_owned);
            async move {
                Err::<HttpResponse, _>(match allowed {
                    Some(allow) => ApiError::MethodNotAllowed {
                        method: request.method().to_string(),
                        allow,
                    },
                    None => ApiError::NotFound("no such endpoint".to_owned()),
                })
            }
        }))
}
