//! The API-key check on arbitrary `Authorization` header values: JWT parsing (header, claims,
//! base64url, the signature) against a fixed ES384 key whose private half was thrown away after
//! signing one token (in the seed corpus, valid for a hundred years). Nothing may panic, and the
//! only value that may pass is `Bearer` and that very token: any other would be a forgery.

#![no_main]

use std::sync::OnceLock;

use axum::http::{HeaderMap, HeaderValue, header};
use diagmon::auth::{ApiKeyConfig, AuthenticationConfig, Authenticator};
use libfuzzer_sys::fuzz_target;

/// The `sub` of the seed token.
const SUBJECT: &str = include_str!("../jwt/subject");

/// The one token the key signed.
const TOKEN: &str = include_str!("../jwt/token");

/// The public half of the key that signed the seed token, a base64url JWK.
const PUBLIC_KEY: &str = include_str!("../jwt/public_key");

fn authenticator() -> &'static Authenticator {
    static AUTHENTICATOR: OnceLock<Authenticator> = OnceLock::new();
    AUTHENTICATOR.get_or_init(|| {
        let config = AuthenticationConfig {
            api_key: Some(ApiKeyConfig {
                subject: SUBJECT.trim().to_owned(),
                public_key: PUBLIC_KEY.trim().to_owned(),
                issuer: None,
                audience: None,
            }),
        };
        let authenticator = Authenticator::from_config(&config);
        assert!(authenticator.is_enabled());
        authenticator
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(value) = HeaderValue::from_bytes(data) else {
        return;
    };
    let mut headers = HeaderMap::new();
    headers.insert(header::AUTHORIZATION, value);
    if authenticator().authorize(&headers).is_ok() {
        let text = String::from_utf8_lossy(data);
        let (scheme, token) = text.split_once(' ').unwrap_or_default();
        assert!(scheme.eq_ignore_ascii_case("bearer"), "passed: {text}");
        assert_eq!(token.trim_matches(' '), TOKEN.trim(), "passed: {text}");
    }
});
