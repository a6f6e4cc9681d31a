//! Errors as RFC 7807 `application/problem+json`, the one error shape of the API.

use std::collections::BTreeMap;

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

/// A problem response: status, title, detail and, for validation errors, the fields that were
/// wrong (dotnet-monitor's ProblemDetails / ValidationProblemDetails).
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Problem {
    #[serde(skip)]
    #[schema(ignore)]
    status: StatusCode,
    /// A short summary of the problem type.
    title: String,
    /// The HTTP status, repeated in the body.
    #[serde(rename = "status")]
    status_code: u16,
    /// What went wrong in this request.
    #[serde(skip_serializing_if = "Option::is_none")]
    detail: Option<String>,
    /// Validation errors by field (`durationSeconds`, `providers[0].keywords`, ...).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    errors: BTreeMap<String, Vec<String>>,
}

impl Problem {
    /// A problem with this status and detail.
    pub fn new(status: StatusCode, detail: impl Into<String>) -> Self {
        Problem {
            status,
            title: status.canonical_reason().unwrap_or("Error").to_owned(),
            status_code: status.as_u16(),
            detail: Some(detail.into()),
            errors: BTreeMap::new(),
        }
    }

    /// 400 with a detail.
    pub fn bad_request(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, detail)
    }

    /// 429 "Rate limit reached." (dotnet-monitor's words).
    pub fn rate_limited() -> Self {
        Self::new(StatusCode::TOO_MANY_REQUESTS, "Rate limit reached.")
    }

    /// 400 with validation errors by field.
    pub fn validation(errors: BTreeMap<String, Vec<String>>) -> Self {
        let detail = errors
            .iter()
            .flat_map(|(field, messages)| messages.iter().map(move |m| format!("{field}: {m}")))
            .collect::<Vec<_>>()
            .join(" ");
        Problem {
            status: StatusCode::BAD_REQUEST,
            title: "One or more validation errors occurred.".to_owned(),
            status_code: 400,
            detail: Some(detail),
            errors,
        }
    }

    /// 400 naming one field.
    pub fn field(field: &str, message: impl Into<String>) -> Self {
        Self::validation(BTreeMap::from([(field.to_owned(), vec![message.into()])]))
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let body = serde_json::to_vec(&self).unwrap_or_default();
        let mut response = (self.status, body).into_response();
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        response
    }
}

/// Collects validation errors by field while a request is checked.
#[derive(Debug, Default)]
pub struct Validation {
    errors: BTreeMap<String, Vec<String>>,
}

impl Validation {
    /// Records an error on `field`.
    pub fn error(&mut self, field: impl Into<String>, message: impl Into<String>) {
        self.errors
            .entry(field.into())
            .or_default()
            .push(message.into());
    }

    /// Ok with `value` when no error was recorded, else the 400 problem listing them all.
    pub fn finish<T>(self, value: T) -> Result<T, Problem> {
        if self.errors.is_empty() {
            Ok(value)
        } else {
            Err(Problem::validation(self.errors))
        }
    }
}
