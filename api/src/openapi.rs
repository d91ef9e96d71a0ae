//! The OpenAPI document, generated from the handlers' annotations and served at
//! `/api/v1/openapi.json`, with Swagger UI (served from the binary) at `/api/v1/docs/`.

use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use crate::error::{FieldError, Problem};

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
