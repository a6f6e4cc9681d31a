//! The OpenAPI description of the API, generated from the handlers' annotations and the types
//! they return, served at `/openapi.json`.

use axum::Json;
use utoipa::OpenApi;

/// The API description.
#[derive(OpenApi)]
#[openapi(
    info(title = "diagmon", description = "Diagnostics monitor for .NET processes: dotnet-monitor's HTTP API with WebAssembly egress."),
    paths(
        super::trace::post_trace,
        super::trace::get_trace,
        super::dump::get_dump,
        super::gcdump::get_gcdump,
        super::processes::list_processes,
        super::processes::get_process,
        super::processes::get_environment,
        super::operations::list_operations,
        super::operations::get_operation,
        super::operations::delete_operation,
        super::info,
        super::metrics::get_metrics,
        super::metrics::get_livemetrics,
        super::metrics::post_livemetrics,
        super::egress_providers::list_egress_providers,
        super::collection_rules::list_collection_rules,
        super::collection_rules::get_collection_rule,
    ),
    components(schemas(super::trace::EventProvidersConfiguration, super::trace::EventProviderConfiguration)),
    modifiers(&BearerSecurity),
    security(("bearer" = []))
)]
pub struct ApiDoc;

struct BearerSecurity;

impl utoipa::Modify for BearerSecurity {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let scheme = HttpBuilder::new()
            .scheme(HttpAuthScheme::Bearer)
            .bearer_format("JWT")
            .build();
        openapi
            .components
            .get_or_insert_with(Default::default)
            .add_security_scheme("bearer", SecurityScheme::Http(scheme));
    }
}

/// `GET /openapi.json`.
pub async fn openapi_json() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}
