//! The OpenAPI document, generated from the handlers' annotations and served at
//! `/api/v1/openapi.json`, with Swagger UI (served from the binary) at `/api/v1/docs/`.

use utoipa::openapi::content::ContentBuilder;
use utoipa::openapi::header::HeaderBuilder;
use utoipa::openapi::path::{Operation, ParameterIn};
use utoipa::openapi::response::{Response, ResponseBuilder};
use utoipa::openapi::schema::{ObjectBuilder, Schema, Type};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{Ref, RefOr};
use utoipa::{Modify, OpenApi};

use crate::error::{Code, FieldError, Problem};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Evergreen store API",
        description = "Users, products and purchases. Errors are application/problem+json. \
                       Authenticate with `Authorization: Bearer <access_token>` from /auth/login."
    ),
    modifiers(&BearerAuth),
    components(schemas(Problem, FieldError)),
    tags(
        (name = "auth", description = "Register, sign in, refresh, sign out"),
        (name = "users", description = "Profiles and admin user management"),
        (name = "products", description = "Catalog (public) and admin product writes"),
        (name = "purchases", description = "Atomic, idempotent orders"),
        (name = "health", description = "Liveness and readiness"),
    )
)]
#[derive(Debug)]
pub struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .build(),
            ),
        );
    }
}

/// The refusals every operation can give, whatever its handler: added to each
/// operation of `/api/v1` that does not document the status itself, so that
/// the document lists every status a client can really get (schemathesis
/// checks it). Also pins `currency` to the store's one.
pub fn complete(openapi: &mut utoipa::openapi::OpenApi, currency: &str) {
    for (path, item) in openapi.paths.paths.iter_mut() {
        if !path.starts_with("/api/v1/") {
            continue;
        }
        let auth_route = path.starts_with("/api/v1/auth/");
        for operation in [
            &mut item.get,
            &mut item.post,
            &mut item.patch,
            &mut item.put,
            &mut item.delete,
        ]
        .into_iter()
        .flatten()
        {
            complete_operation(operation, auth_route);
        }
    }
    if let Some(components) = openapi.components.as_mut() {
        if let Some(RefOr::T(Schema::Object(object))) =
            components.schemas.get_mut("CreateProductRequest")
            && let Some(RefOr::T(Schema::Object(field))) = object.properties.get_mut("currency")
        {
            field.enum_values = Some(vec![currency.into()]);
        }
        // The table of codes, so that clients can generate them.
        if let Some(RefOr::T(Schema::Object(object))) = components.schemas.get_mut("Problem")
            && let Some(RefOr::T(Schema::Object(field))) = object.properties.get_mut("code")
        {
            field.enum_values = Some(Code::ALL.iter().map(|c| c.as_str().into()).collect());
        }
    }
}

fn complete_operation(operation: &mut Operation, auth_route: bool) {
    // Handlers name their refusals by status and description only: every
    // error answer is a Problem, said here once.
    for (status, response) in operation.responses.responses.iter_mut() {
        if let RefOr::T(response) = response
            && status.as_str() >= "400"
            && response.content.is_empty()
        {
            let description = if response.description.is_empty() {
                generic_description(status)
            } else {
                response.description.clone()
            };
            let headers = std::mem::take(&mut response.headers);
            *response = problem(&description);
            response.headers = headers;
        }
    }
    let has_body = operation.request_body.is_some();
    let parameters = operation.parameters.as_deref().unwrap_or_default();
    let has_parameters = !parameters.is_empty();
    let has_query = parameters.iter().any(|parameter| match parameter {
        RefOr::T(parameter) => parameter.parameter_in == ParameterIn::Query,
        RefOr::Ref(_) => false,
    });
    let signed_in = operation
        .security
        .as_ref()
        .is_some_and(|requirements| !requirements.is_empty());
    let mut add = |status: &str, response: Response| {
        operation
            .responses
            .responses
            .entry(status.to_owned())
            .or_insert(RefOr::T(response));
    };
    if has_body || has_parameters {
        add(
            "400",
            problem(
                "Malformed request: unreadable JSON, an unknown field, a wrong type, \
                 or a path, query or header parameter that does not parse",
            ),
        );
    }
    if signed_in {
        add(
            "401",
            problem("Missing, invalid or expired access token, or ended session"),
        );
    }
    if has_body {
        add("413", problem("Body over 64 KiB"));
        add("415", problem("Body is not application/json"));
    }
    if has_body || has_query {
        add(
            "422",
            problem("Invalid fields or parameters, listed per field in `errors`"),
        );
    }
    if auth_route {
        add(
            "429",
            with_retry_after(problem(
                "Too many sign-in attempts from this address (nginx) or for this account",
            )),
        );
    }
    add(
        "503",
        with_retry_after(problem(
            "The data store is unavailable or did not confirm a write (failover): \
             retry after the given seconds; an Idempotency-Key makes a purchase retry safe",
        )),
    );
}

/// What an error status means when a handler does not say more.
fn generic_description(status: &str) -> String {
    match status {
        "400" => "Malformed request",
        "401" => "Not signed in, or the session ended",
        "403" => "Not allowed for this role",
        "404" => "Not found, or not this caller's to see",
        "409" => "Conflicts with the current state",
        "412" => "If-Match does not name the current version",
        "422" => "Invalid fields",
        "428" => "If-Match is required",
        "429" => "Too many requests; see Retry-After",
        _ => "Error",
    }
    .to_owned()
}

fn problem(description: &str) -> Response {
    ResponseBuilder::new()
        .description(description)
        .content(
            "application/problem+json",
            ContentBuilder::new()
                .schema(Some(Ref::from_schema_name("Problem")))
                .build(),
        )
        .build()
}

fn with_retry_after(mut response: Response) -> Response {
    response.headers.insert(
        "Retry-After".to_owned(),
        RefOr::T(
            HeaderBuilder::new()
                .schema(Some(
                    ObjectBuilder::new()
                        .schema_type(Type::Integer)
                        .minimum(Some(0)),
                ))
                .description(Some("Seconds to wait before retrying"))
                .build(),
        ),
    );
    response
}

/// The methods of every path the document lists, to answer a known path with
/// the wrong method 405 + `Allow` (RFC 9110) instead of 404. Built from the
/// document, so it cannot drift from the routes.
#[derive(Debug, Clone, Default)]
pub struct MethodTable {
    /// Path segments (`None` for a `{parameter}`) and the methods, `, `-joined.
    paths: Vec<(Vec<Option<String>>, String)>,
}

impl MethodTable {
    pub fn new(openapi: &utoipa::openapi::OpenApi) -> Self {
        let mut paths: Vec<(Vec<Option<String>>, String)> = openapi
            .paths
            .paths
            .iter()
            .map(|(path, item)| {
                let segments = path
                    .split('/')
                    .map(|segment| (!segment.starts_with('{')).then(|| segment.to_owned()))
                    .collect();
                let methods: Vec<&str> = [
                    ("GET", item.get.is_some()),
                    ("POST", item.post.is_some()),
                    ("PUT", item.put.is_some()),
                    ("PATCH", item.patch.is_some()),
                    ("DELETE", item.delete.is_some()),
                ]
                .into_iter()
                .filter_map(|(method, present)| present.then_some(method))
                .collect();
                (segments, methods.join(", "))
            })
            .collect();
        // `/users/me` before `/users/{id}`: the most literal segments win.
        paths.sort_by_key(|(segments, _)| {
            std::cmp::Reverse(segments.iter().filter(|s| s.is_some()).count())
        });
        Self { paths }
    }

    /// The `Allow` value for `path`, if the document has that path.
    pub fn allowed(&self, path: &str) -> Option<&str> {
        let segments: Vec<&str> = path.split('/').collect();
        self.paths
            .iter()
            .find(|(pattern, _)| {
                pattern.len() == segments.len()
                    && pattern
                        .iter()
                        .zip(&segments)
                        .all(|(expected, actual)| match expected {
                            Some(literal) => literal == actual,
                            None => !actual.is_empty(),
                        })
            })
            .map(|(_, methods)| methods.as_str())
    }
}
