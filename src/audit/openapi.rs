//! The OpenAPI 3.1 document of the audit API, generated from the handlers' `#[utoipa::path]`
//! attributes and the response types: a route exists in the router exactly when it is in the
//! document, since both come from [`routes`].

use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{AuditState, channels, feed};

/// Where the document is served.
pub const DOCUMENT_PATH: &str = "/openapi.json";

#[derive(OpenApi)]
#[openapi(
    info(
        title = "mpe-ledger audit API",
        description = "Read-only history of the ledger's payment channels. Amounts are decimal strings in cogs; hashes, group ids and signatures are 0x-hex."
    ),
    modifiers(&BearerAuth)
)]
struct ApiDoc;

/// The `bearer` security scheme the routes name.
struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// Every route of the API with its part of the document.
pub fn routes() -> OpenApiRouter<AuditState> {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(channels::list))
        .routes(routes!(channels::one))
        .routes(routes!(channels::events))
        .routes(routes!(channels::claims))
        .routes(routes!(feed::events))
        .routes(routes!(feed::streams))
}

/// The document, as served.
pub fn document() -> utoipa::openapi::OpenApi {
    routes().split_for_parts().1
}

/// The document as the JSON that `/openapi.json` serves.
pub fn document_json() -> serde_json::Value {
    serde_json::to_value(document()).expect("the document serializes")
}
