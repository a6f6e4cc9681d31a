//! The OpenAPI description of the API, generated from the handlers' annotations and the types
//! they return, served at `/openapi.json`.

use std::collections::BTreeMap;

use axum::Json;
use utoipa::{IntoParams, OpenApi, ToSchema};

/// The query parameters `POST /trace` and `GET /trace` share.
#[derive(IntoParams)]
#[into_params(parameter_in = Query, rename_all = "camelCase")]
#[allow(dead_code)] // Describes the query the handlers parse by hand (`super::params`).
pub struct TraceQuery {
    /// Process id.
    pid: Option<u64>,
    /// Runtime instance uid.
    uid: Option<uuid::Uuid>,
    /// Process name.
    name: Option<String>,
    /// Default 30; -1 = until stopped.
    duration_seconds: Option<i64>,
    /// Send the trace to this provider (202) instead of the response (200).
    egress_provider: Option<String>,
    /// Comma-separated tags for the operation.
    tags: Option<String>,
}

/// `POST /trace`'s body (dotnet-monitor's EventProvidersConfiguration). Property names are
/// matched case-insensitively.
#[derive(ToSchema)]
#[allow(dead_code)] // Describes the JSON the handler validates by hand, field by field.
pub struct EventProvidersConfiguration {
    /// At least one provider.
    providers: Vec<EventProviderConfiguration>,
    /// Rundown at the end of the trace (default true).
    request_rundown: Option<bool>,
    /// The runtime's buffer, 1 to 1024 MB (default 256).
    #[schema(rename = "bufferSizeInMB", minimum = 1, maximum = 1024)]
    buffer_size_in_mb: Option<u32>,
}

/// One provider of `POST /trace`.
#[derive(ToSchema)]
#[allow(dead_code)] // Describes the JSON the handler validates by hand, field by field.
pub struct EventProviderConfiguration {
    /// The provider name.
    name: String,
    /// Keywords as a string: decimal (may be "-1") or 0x hexadecimal; default all bits.
    keywords: Option<String>,
    /// LogAlways, Critical, Error, Warning, Informational, Verbose (or 0-5); default Verbose.
    event_level: Option<String>,
    /// Arguments passed to the provider as filter data.
    arguments: Option<BTreeMap<String, String>>,
}

/// The API description.
#[derive(OpenApi)]
#[openapi(
    info(title = "diagmon", description = "Diagnostics monitor for .NET processes: dotnet-monitor's HTTP API with WebAssembly egress."),
    paths(
        super::trace::post_trace,
        super::trace::get_trace,
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
    ),
    components(schemas(EventProvidersConfiguration, EventProviderConfiguration)),
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
