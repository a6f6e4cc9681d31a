//! `GET /egress`: the egress providers a client may name in `egressProvider`, so that a client
//! (the web console among them) can offer them without knowing the configuration.

use axum::Json;
use axum::extract::State;
use serde::Serialize;

use super::AppState;

/// One configured egress provider.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct EgressProviderDescription {
    /// The name to pass as `egressProvider`.
    name: String,
    /// The component it runs: a built-in name (`filesystem`, `object-storage`) or a `.wasm` path.
    component: String,
}

/// `GET /egress`: the configured egress providers, by name.
#[utoipa::path(get, path = "/egress", responses((status = 200, body = Vec<EgressProviderDescription>)))]
pub async fn list_egress_providers(
    State(app): State<AppState>,
) -> Json<Vec<EgressProviderDescription>> {
    Json(
        app.config
            .egress
            .providers
            .iter()
            .map(|(name, provider)| EgressProviderDescription {
                name: name.clone(),
                component: provider.component.clone(),
            })
            .collect(),
    )
}
