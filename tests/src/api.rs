//! What the end-to-end tests read back from the monitor's HTTP API and its artifacts: a JSON
//! answer, an operation polled to its end, the `Location` of a started one, and the checks every artifact
//! test makes of the bytes it got (SHA-256, a whole nettrace).

use std::time::{Duration, Instant};

use diagmon::diagnostics::nettrace::{NettraceSummary, NettraceValidator};
use serde_json::Value;
use sha2::{Digest, Sha256};

/// The states an operation ends in.
pub const FINAL_STATES: [&str; 3] = ["Succeeded", "Failed", "Cancelled"];

/// `GET location` until the operation reaches a final state, and its last answer; panics if it
/// has not ended `within`.
pub async fn final_operation(client: &reqwest::Client, location: &str, within: Duration) -> Value {
    let deadline = Instant::now() + within;
    loop {
        let response = client
            .get(location)
            .send()
            .await
            .unwrap_or_else(|error| panic!("GET {location}: {error}"));
        let body: Value = response
            .json()
            .await
            .unwrap_or_else(|error| panic!("GET {location}: not JSON: {error}"));
        if FINAL_STATES.contains(&body["status"].as_str().unwrap_or("")) {
            return body;
        }
        assert!(
            Instant::now() < deadline,
            "operation {location} did not end within {within:?}: {body}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `GET url` with `client`, read as JSON; panics naming the URL if either fails.
pub async fn get_json(client: &reqwest::Client, url: impl reqwest::IntoUrl) -> Value {
    let url = url
        .into_url()
        .unwrap_or_else(|error| panic!("a URL: {error}"));
    let response = client
        .get(url.clone())
        .send()
        .await
        .unwrap_or_else(|error| panic!("GET {url}: {error}"));
    response
        .json()
        .await
        .unwrap_or_else(|error| panic!("GET {url}: not JSON: {error}"))
}

/// The `Location` header of a response that started an operation.
pub fn location_of(response: &reqwest::Response) -> String {
    response
        .headers()
        .get("location")
        .expect("a Location header")
        .to_str()
        .expect("a Location header in ASCII")
        .to_owned()
}

/// The lowercase hex SHA-256 of `bytes`, as operations report it.
pub fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

/// The summary of `bytes`, which must be a well-formed and complete nettrace.
pub fn validated_nettrace(bytes: &[u8]) -> NettraceSummary {
    let mut validator = NettraceValidator::new();
    validator.feed(bytes).expect("a well-formed nettrace");
    validator.finish().expect("a complete nettrace")
}
