//! API-key authentication and HTTPS end to end.
//!
//! Most tests run the real `diagmon collect` binary (see `diagmon_tests::monitor`; `tests/run`
//! builds it) and talk to it over loopback HTTP with reqwest: the token table, `generatekey`
//! output in every format, `--temp-apikey`, a missing key, and key rotation by rewriting the
//! config file. The HTTPS tests serve a small router with `diagmon::server::serve_listener` and a
//! certificate made here with rcgen, because they test the TLS layer, not the routes.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{
    ECDSA_P384_SHA384_FIXED_SIGNING, EcdsaKeyPair, KeyPair, RSA_PKCS1_SHA256, RsaKeyPair,
};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use diagmon_tests::monitor::{Monitor, monitor_binary};
use reqwest::StatusCode;
use reqwest::header::{AUTHORIZATION, WWW_AUTHENTICATE};
use serde_json::{Value, json};

/// A route behind authentication and one that is not.
const PROTECTED: &str = "/info";
const HEALTH: &str = "/healthz";

const SUBJECT: &str = "diagmon-e2e";
const ISSUER: &str = diagmon::auth::DEFAULT_ISSUER;
const AUDIENCE: &str = diagmon::auth::DEFAULT_AUDIENCE;
const CHALLENGE: &str = "Bearer";
const INVALID_TOKEN: &str = r#"Bearer error="invalid_token""#;

fn client() -> reqwest::Client {
    diagmon::tls::install_crypto_provider();
    reqwest::Client::new()
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("the clock is after 1970")
        .as_secs()
}

fn b64(bytes: impl AsRef<[u8]>) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// An EC P-384 key pair with its PKCS#8 form (for jsonwebtoken) and public JWK.
struct EcKey {
    pair: EcdsaKeyPair,
    pkcs8: Vec<u8>,
}

impl EcKey {
    fn new() -> Self {
        let pair = EcdsaKeyPair::generate(&ECDSA_P384_SHA384_FIXED_SIGNING).expect("a P-384 key");
        let pkcs8 = pair.to_pkcs8v1().expect("PKCS#8").as_ref().to_vec();
        EcKey { pair, pkcs8 }
    }

    /// The base64url JWK to configure as `public_key`.
    fn public_key(&self) -> String {
        let point = self.pair.public_key().as_ref();
        let (x, y) = point[1..].split_at(48);
        b64(json!({"kty": "EC", "crv": "P-384", "x": b64(x), "y": b64(y)}).to_string())
    }

    /// An ES384 token signed with jsonwebtoken, as any JWT library would make it.
    fn token(&self, claims: &Value) -> String {
        jsonwebtoken::encode(
            &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES384),
            claims,
            &jsonwebtoken::EncodingKey::from_ec_der(&self.pkcs8),
        )
        .expect("sign an ES384 token")
    }

    /// A token with any header, signed by hand (for headers jsonwebtoken will not write).
    fn token_with_header(&self, header: &Value, claims: &Value) -> String {
        let message = format!("{}.{}", b64(header.to_string()), b64(claims.to_string()));
        let signature = self
            .pair
            .sign(&SystemRandom::new(), message.as_bytes())
            .expect("sign");
        format!("{message}.{}", b64(signature))
    }
}

fn config_for(public_key: &str, subject: &str) -> String {
    format!("[authentication.api_key]\nsubject = \"{subject}\"\npublic_key = \"{public_key}\"\n")
}

fn claims() -> Value {
    json!({"sub": SUBJECT, "iss": ISSUER, "aud": AUDIENCE, "exp": unix_now() + 600})
}

fn with(mut claims: Value, name: &str, value: Value) -> Value {
    if value.is_null() {
        claims.as_object_mut().expect("an object").remove(name);
    } else {
        claims[name] = value;
    }
    claims
}

/// An RS256 token from a fresh 2048-bit RSA key.
fn rsa_token(claims: &Value) -> String {
    let pair = RsaKeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048).expect("an RSA key");
    let message = format!(
        "{}.{}",
        b64(json!({"alg": "RS256", "typ": "JWT"}).to_string()),
        b64(claims.to_string())
    );
    let mut signature = vec![0; pair.public_modulus_len()];
    pair.sign(
        &RSA_PKCS1_SHA256,
        &SystemRandom::new(),
        message.as_bytes(),
        &mut signature,
    )
    .expect("sign");
    format!("{message}.{}", b64(signature))
}

/// What a request with `authorization` gets: status, `WWW-Authenticate`, body.
async fn get(
    client: &reqwest::Client,
    url: &str,
    authorization: Option<&str>,
) -> (StatusCode, Option<String>, String) {
    let mut request = client.get(url);
    if let Some(value) = authorization {
        request = request.header(AUTHORIZATION, value);
    }
    let response = request.send().await.expect("the monitor answers");
    let status = response.status();
    let challenge = response
        .headers()
        .get(WWW_AUTHENTICATE)
        .and_then(|value| value.to_str().ok())
        .map(str::to_owned);
    let body = response.text().await.expect("a body");
    (status, challenge, body)
}

/// A 401 body is a problem that says how to get a key, and nothing about which check failed.
fn assert_problem_says_how_to_get_a_key(body: &str, what: &str) {
    let problem: Value = serde_json::from_str(body)
        .unwrap_or_else(|error| panic!("{what}: the 401 body is not JSON ({error}): {body}"));
    assert_eq!(problem["status"], 401, "{what}: {body}");
    let detail = problem["detail"].as_str().unwrap_or_default();
    assert!(detail.contains("diagmon generatekey"), "{what}: {body}");
}

/// Polls until `token` is accepted, or refused when `accepted` is false (≤ 5 s: the server
/// notices a changed config file within a second).
async fn wait_until(
    client: &reqwest::Client,
    monitor: &Monitor,
    token: &str,
    accepted: bool,
    what: &str,
) {
    let expected = if accepted {
        StatusCode::OK
    } else {
        StatusCode::UNAUTHORIZED
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let (status, _, body) = get(
            client,
            &monitor.url(PROTECTED),
            Some(&format!("Bearer {token}")),
        )
        .await;
        if status == expected {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{what}: still {status} after 5 s: {body}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn assert_accepted(client: &reqwest::Client, monitor: &Monitor, token: &str, what: &str) {
    let (status, _, body) = get(
        client,
        &monitor.url(PROTECTED),
        Some(&format!("Bearer {token}")),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{what}: {body}");
}

// The token table: only the first row is accepted; each refusal is an empty 401 whose
// challenge says only whether a token was seen.
#[tokio::test]
async fn only_a_valid_token_gets_through() {
    let client = client();
    let key = EcKey::new();
    let other_key = EcKey::new();
    let monitor = Monitor::start(&config_for(&key.public_key(), SUBJECT), &[]);
    let now = unix_now();

    let valid_claims = claims();
    let valid = key.token(&valid_claims);
    let tampered = {
        // Push `exp` far out by changing one byte of the payload, keeping the signature.
        let mut parts: Vec<String> = valid.split('.').map(str::to_owned).collect();
        let payload = String::from_utf8(URL_SAFE_NO_PAD.decode(&parts[1]).expect("base64url"))
            .expect("UTF-8");
        let exp = valid_claims["exp"].to_string();
        let changed = payload.replacen(&exp, &format!("9{}", &exp[1..]), 1);
        assert_ne!(changed, payload);
        parts[1] = b64(changed);
        parts.join(".")
    };
    let alg_none = format!(
        "{}.{}.",
        b64(r#"{"alg":"none","typ":"JWT"}"#),
        b64(claims().to_string())
    );
    // Algorithm confusion: HMAC keyed with the public key as the server stores it.
    let hs256 = |secret: &[u8]| {
        jsonwebtoken::encode(
            &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
            &claims(),
            &jsonwebtoken::EncodingKey::from_secret(secret),
        )
        .expect("sign HS256")
    };
    let public_key = key.public_key();
    let public_jwk = URL_SAFE_NO_PAD.decode(&public_key).expect("base64url");

    let cases: Vec<(&str, Option<String>, StatusCode, Option<&str>)> = vec![
        (
            "valid",
            Some(format!("Bearer {valid}")),
            StatusCode::OK,
            None,
        ),
        ("no header", None, StatusCode::UNAUTHORIZED, Some(CHALLENGE)),
        (
            "scheme Basic",
            Some(format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode("user:pass")
            )),
            StatusCode::UNAUTHORIZED,
            Some(CHALLENGE),
        ),
        (
            "empty token",
            Some("Bearer ".into()),
            StatusCode::UNAUTHORIZED,
            Some(CHALLENGE),
        ),
        (
            "garbage",
            Some("Bearer garbage.garbage.garbage".into()),
            StatusCode::UNAUTHORIZED,
            Some(INVALID_TOKEN),
        ),
        (
            "one payload byte changed",
            Some(format!("Bearer {tampered}")),
            StatusCode::UNAUTHORIZED,
            Some(INVALID_TOKEN),
        ),
        (
            "signed by another key",
            Some(format!("Bearer {}", other_key.token(&claims()))),
            StatusCode::UNAUTHORIZED,
            Some(INVALID_TOKEN),
        ),
        (
            "alg none",
            Some(format!("Bearer {alg_none}")),
            StatusCode::UNAUTHORIZED,
            Some(INVALID_TOKEN),
        ),
        (
            "HS256 keyed with the configured string",
            Some(format!("Bearer {}", hs256(public_key.as_bytes()))),
            StatusCode::UNAUTHORIZED,
            Some(INVALID_TOKEN),
        ),
        (
            "HS256 keyed with the JWK JSON",
            Some(format!("Bearer {}", hs256(&public_jwk))),
            StatusCode::UNAUTHORIZED,
            Some(INVALID_TOKEN),
        ),
        (
            "HS256 keyed with the EC point",
            Some(format!("Bearer {}", hs256(key.pair.public_key().as_ref()))),
            StatusCode::UNAUTHORIZED,
            Some(INVALID_TOKEN),
        ),
        (
            "expired",
            Some(format!(
                "Bearer {}",
                key.token(&with(claims(), "exp", json!(now - 3600)))
            )),
            StatusCode::UNAUTHORIZED,
            Some(INVALID_TOKEN),
        ),
        (
            "missing exp",
            Some(format!(
                "Bearer {}",
                key.token(&with(claims(), "exp", Value::Null))
            )),
            StatusCode::UNAUTHORIZED,
            Some(INVALID_TOKEN),
        ),
        (
            "wrong sub",
            Some(format!(
                "Bearer {}",
                key.token(&with(claims(), "sub", json!("someone-else")))
            )),
            StatusCode::UNAUTHORIZED,
            Some(INVALID_TOKEN),
        ),
        (
            "wrong iss",
            Some(format!(
                "Bearer {}",
                key.token(&with(
                    claims(),
                    "iss",
                    json!(diagmon::auth::DOTNET_MONITOR_ISSUER)
                ))
            )),
            StatusCode::UNAUTHORIZED,
            Some(INVALID_TOKEN),
        ),
        (
            "wrong aud",
            Some(format!(
                "Bearer {}",
                key.token(&with(
                    claims(),
                    "aud",
                    json!(diagmon::auth::DOTNET_MONITOR_AUDIENCE)
                ))
            )),
            StatusCode::UNAUTHORIZED,
            Some(INVALID_TOKEN),
        ),
        (
            "RSA token against the EC key",
            Some(format!("Bearer {}", rsa_token(&claims()))),
            StatusCode::UNAUTHORIZED,
            Some(INVALID_TOKEN),
        ),
        (
            "typ JWE",
            Some(format!(
                "Bearer {}",
                key.token_with_header(&json!({"alg": "ES384", "typ": "JWE"}), &claims())
            )),
            StatusCode::UNAUTHORIZED,
            Some(INVALID_TOKEN),
        ),
    ];
    for (what, authorization, expected_status, expected_challenge) in cases {
        let (status, challenge, body) =
            get(&client, &monitor.url(PROTECTED), authorization.as_deref()).await;
        assert_eq!(status, expected_status, "{what}: {body}");
        assert_eq!(challenge.as_deref(), expected_challenge, "{what}");
        if status == StatusCode::UNAUTHORIZED {
            assert_problem_says_how_to_get_a_key(&body, what);
        }
    }

    // Health needs no token.
    let (status, _, _) = get(&client, &monitor.url(HEALTH), None).await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn dotnet_monitor_issuer_and_audience_can_be_configured() {
    let client = client();
    let key = EcKey::new();
    let config = format!(
        "{}issuer = \"{}\"\naudience = \"{}\"\n",
        config_for(&key.public_key(), SUBJECT),
        diagmon::auth::DOTNET_MONITOR_ISSUER,
        diagmon::auth::DOTNET_MONITOR_AUDIENCE
    );
    let monitor = Monitor::start(&config, &[]);
    let dotnet_claims = with(
        with(claims(), "iss", json!(diagmon::auth::DOTNET_MONITOR_ISSUER)),
        "aud",
        json!(diagmon::auth::DOTNET_MONITOR_AUDIENCE),
    );
    assert_accepted(
        &client,
        &monitor,
        &key.token(&dotnet_claims),
        "dotnet-monitor claims",
    )
    .await;
    let (status, _, _) = get(
        &client,
        &monitor.url(PROTECTED),
        Some(&format!("Bearer {}", key.token(&claims()))),
    )
    .await;
    assert_eq!(
        status,
        StatusCode::UNAUTHORIZED,
        "diagmon's own iss/aud no longer fit"
    );
}

/// Runs `diagmon generatekey --output <format>` and returns its stdout.
fn generatekey(format: &str) -> String {
    let output = Command::new(monitor_binary())
        .args(["generatekey", "--output", format, "--expiration", "1h"])
        .output()
        .expect("run diagmon generatekey");
    assert!(
        output.status.success(),
        "generatekey --output {format} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).expect("UTF-8 output")
}

/// The token of the `Authorization: Bearer <token>` line.
fn header_token(output: &str) -> String {
    output
        .lines()
        .find_map(|line| line.strip_prefix("Authorization: Bearer "))
        .unwrap_or_else(|| panic!("no Authorization line in:\n{output}"))
        .to_owned()
}

/// `NAME=value` pairs from the shell/cmd/PowerShell lines of a generatekey output.
fn env_assignments(output: &str) -> Vec<(String, String)> {
    output
        .lines()
        .filter_map(|line| {
            let assignment = line
                .strip_prefix("export ")
                .or_else(|| line.strip_prefix("set "))
                .or_else(|| line.strip_prefix("$env:"))?;
            let (name, value) = assignment.split_once('=')?;
            Some((
                name.trim().to_owned(),
                value.trim().trim_matches('"').to_owned(),
            ))
        })
        .collect()
}

#[tokio::test]
async fn generatekey_text_and_machinejson_configure_a_monitor() {
    let client = client();

    let text = generatekey("text");
    let toml_settings = &text[text
        .find("[authentication.api_key]")
        .expect("TOML settings")..];
    let monitor = Monitor::start(toml_settings, &[]);
    assert_accepted(&client, &monitor, &header_token(&text), "text").await;
    let (status, _, _) = get(&client, &monitor.url(PROTECTED), None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    let machine: Value =
        serde_json::from_str(&generatekey("machinejson")).expect("one JSON object");
    let api_key = &machine["authentication"]["api_key"];
    let config = config_for(
        api_key["public_key"].as_str().expect("public_key"),
        api_key["subject"].as_str().expect("subject"),
    );
    let header = machine["authorization_header"]
        .as_str()
        .expect("authorization_header");
    let token = header.strip_prefix("Bearer ").expect("a Bearer header");
    let monitor = Monitor::start(&config, &[]);
    assert_accepted(&client, &monitor, token, "machinejson").await;
}

#[tokio::test]
async fn generatekey_environment_formats_configure_a_monitor() {
    let client = client();
    for format in ["shell", "cmd", "powershell"] {
        let output = generatekey(format);
        let assignments = env_assignments(&output);
        let names: Vec<&str> = assignments.iter().map(|(name, _)| name.as_str()).collect();
        assert_eq!(
            names,
            [
                "DIAGMON_AUTHENTICATION__API_KEY__SUBJECT",
                "DIAGMON_AUTHENTICATION__API_KEY__PUBLIC_KEY"
            ],
            "{format}"
        );
        let env: Vec<(&str, &str)> = assignments
            .iter()
            .map(|(name, value)| (name.as_str(), value.as_str()))
            .collect();
        let monitor = Monitor::start_with_env("", &[], &env);
        assert_accepted(&client, &monitor, &header_token(&output), format).await;
    }
}

/// The JSON format is a JSON config file; the monitor fixture writes TOML, so this one loads
/// the file through the same `config::load` + `Authenticator` the binary uses.
#[test]
fn generatekey_json_is_a_config_file_that_accepts_the_token() {
    let output = generatekey("json");
    let json_settings = &output[output.find("\n{").expect("JSON settings")..];
    let dir = tempfile::tempdir().expect("a temporary directory");
    let path = dir.path().join("diagmon.json");
    std::fs::write(&path, json_settings).expect("write the JSON config");
    let config = diagmon::config::load(Some(&path), json!({})).expect("the JSON config loads");
    let authenticator = diagmon::auth::Authenticator::from_config(&config.authentication);
    let mut headers = axum::http::HeaderMap::new();
    let value = format!("Bearer {}", header_token(&output));
    headers.insert(AUTHORIZATION, value.parse().expect("a header value"));
    assert_eq!(authenticator.authorize(&headers), Ok(()));
}

#[tokio::test]
async fn temp_apikey_prints_a_token_that_works_for_this_run() {
    let client = client();
    let monitor = Monitor::start("", &["--temp-apikey"]);
    let stdout = monitor.stdout_lines().join("\n");
    let token = header_token(&stdout);
    assert_accepted(&client, &monitor, &token, "--temp-apikey").await;
    let (status, challenge, _) = get(&client, &monitor.url(PROTECTED), Some("Bearer nope")).await;
    assert_eq!(
        (status, challenge.as_deref()),
        (StatusCode::UNAUTHORIZED, Some(INVALID_TOKEN))
    );

    // A second run has a different key: the first token is worthless there.
    let second = Monitor::start("", &["--temp-apikey"]);
    let (status, _, _) = get(
        &client,
        &second.url(PROTECTED),
        Some(&format!("Bearer {token}")),
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn without_a_key_the_monitor_starts_and_refuses_everything() {
    let client = client();
    for config in [
        "",
        "[authentication.api_key]\nsubject = \"x\"\npublic_key = \"not-a-key\"\n",
    ] {
        let monitor = Monitor::start(config, &[]);
        let key = EcKey::new();
        let (status, challenge, _) = get(
            &client,
            &monitor.url(PROTECTED),
            Some(&format!("Bearer {}", key.token(&claims()))),
        )
        .await;
        assert_eq!(
            (status, challenge.as_deref()),
            (StatusCode::UNAUTHORIZED, Some(INVALID_TOKEN))
        );
        let (status, _, _) = get(&client, &monitor.url(HEALTH), None).await;
        assert_eq!(status, StatusCode::OK, "health needs no key");
        let logs = [monitor.stderr_lines(), monitor.stdout_lines()]
            .concat()
            .join("\n");
        assert!(
            logs.contains("every API request will be refused with 401"),
            "the start-up log says why: {logs}"
        );
    }
}

#[tokio::test]
async fn rewriting_the_config_file_rotates_the_key_without_a_restart() {
    let client = client();
    let (old, new) = (EcKey::new(), EcKey::new());
    let monitor = Monitor::start(&config_for(&old.public_key(), SUBJECT), &[]);
    let old_token = old.token(&claims());
    let new_token = new.token(&claims());
    assert_accepted(&client, &monitor, &old_token, "the old key before rotation").await;

    std::fs::write(
        monitor.config_path(),
        config_for(&new.public_key(), SUBJECT),
    )
    .expect("rewrite the config file");
    wait_until(
        &client,
        &monitor,
        &new_token,
        true,
        "the new key after rotation",
    )
    .await;
    let (status, _, _) = get(
        &client,
        &monitor.url(PROTECTED),
        Some(&format!("Bearer {old_token}")),
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "the old key is gone");
}

/// Revocation must not fail silently: a config file that is deleted or saved broken no longer
/// vouches for its key, so every request is refused (and the log says why) until a good file
/// is back.
#[tokio::test]
async fn a_deleted_or_broken_config_file_fails_closed() {
    let client = client();
    let key = EcKey::new();
    let monitor = Monitor::start(&config_for(&key.public_key(), SUBJECT), &[]);
    let token = key.token(&claims());
    assert_accepted(&client, &monitor, &token, "before any change").await;

    std::fs::write(monitor.config_path(), "[authentication.api_key\n").expect("rewrite");
    wait_until(&client, &monitor, &token, false, "after a broken rewrite").await;
    let (_, challenge, body) = get(
        &client,
        &monitor.url(PROTECTED),
        Some(&format!("Bearer {token}")),
    )
    .await;
    assert_eq!(challenge.as_deref(), Some(INVALID_TOKEN));
    assert_problem_says_how_to_get_a_key(&body, "after a broken rewrite");
    let logs = monitor.stderr_lines().join("\n");
    assert!(
        logs.contains("cannot be loaded") && logs.contains("refused with 401"),
        "the log says why: {logs}"
    );

    std::fs::write(
        monitor.config_path(),
        config_for(&key.public_key(), SUBJECT),
    )
    .expect("repair the config file");
    wait_until(&client, &monitor, &token, true, "after the repair").await;

    std::fs::remove_file(monitor.config_path()).expect("delete the config file");
    wait_until(
        &client,
        &monitor,
        &token,
        false,
        "after the file was deleted",
    )
    .await;
    let logs = monitor.stderr_lines().join("\n");
    assert!(
        logs.contains("cannot be examined"),
        "the log says why: {logs}"
    );
}

/// An unknown method on a known route is refused for the missing key before routing: a
/// client without a key learns nothing about which routes and methods exist.
#[tokio::test]
async fn unknown_methods_and_routes_need_a_key_first() {
    let client = client();
    let key = EcKey::new();
    let monitor = Monitor::start(&config_for(&key.public_key(), SUBJECT), &[]);
    for (method, path) in [
        (reqwest::Method::PUT, "/trace"),
        (reqwest::Method::DELETE, "/processes"),
        (reqwest::Method::GET, "/no-such-route"),
    ] {
        let response = client
            .request(method.clone(), monitor.url(path))
            .send()
            .await
            .expect("the monitor answers");
        assert_eq!(
            response.status(),
            StatusCode::UNAUTHORIZED,
            "{method} {path}"
        );
        assert!(response.headers().get(reqwest::header::ALLOW).is_none());
        assert_eq!(
            response
                .headers()
                .get(WWW_AUTHENTICATE)
                .and_then(|value| value.to_str().ok()),
            Some(CHALLENGE)
        );
        assert_eq!(
            response
                .headers()
                .get(reqwest::header::CONTENT_TYPE)
                .and_then(|value| value.to_str().ok()),
            Some("application/problem+json")
        );
        let body = response.text().await.expect("a body");
        assert_problem_says_how_to_get_a_key(&body, path);
    }
    // With a key, the same request gets the 405 that says which methods exist.
    let response = client
        .put(monitor.url("/trace"))
        .bearer_auth(key.token(&claims()))
        .send()
        .await
        .expect("the monitor answers");
    assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);
}

// HTTPS: `serve_listener` with a certificate made here.

struct TestCertificate {
    cert_pem: String,
    key_pem: String,
}

fn certificate() -> TestCertificate {
    let certified =
        rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into()])
            .expect("a self-signed certificate");
    TestCertificate {
        cert_pem: certified.cert.pem(),
        key_pem: certified.signing_key.serialize_pem(),
    }
}

fn tls_files(dir: &Path, cert_pem: &str, key_pem: &str) -> diagmon::tls::TlsConfig {
    let certificate = dir.join("cert.pem");
    let key = dir.join("key.pem");
    std::fs::write(&certificate, cert_pem).expect("write the certificate");
    std::fs::write(&key, key_pem).expect("write the key");
    diagmon::tls::TlsConfig { certificate, key }
}

#[tokio::test]
async fn https_round_trip_with_authentication() {
    diagmon::tls::install_crypto_provider();
    let dir = tempfile::tempdir().expect("a temporary directory");
    let cert = certificate();
    let tls = tls_files(dir.path(), &cert.cert_pem, &cert.key_pem);
    let (authenticator, token) =
        diagmon::auth::Authenticator::temporary().expect("a temporary key");
    let http = diagmon::config::HttpConfig::default();
    let router = axum::Router::new()
        .route(PROTECTED, axum::routing::get(|| async { "secret" }))
        .route(HEALTH, axum::routing::get(|| async { "ok" }))
        .layer(axum::middleware::from_fn_with_state(
            diagmon::http::Screen::new(authenticator, &http),
            diagmon::http::guard::screen,
        ));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("the bound address").port();
    let stopping = diagmon::server::Stopping::default();
    let server = tokio::spawn(diagmon::server::serve_listener(
        listener,
        Some(diagmon::tls::load_server_config(&tls).expect("the TLS files load")),
        router,
        std::sync::Arc::new(diagmon::server::ConnectionLimits::new(&http)),
        stopping.clone(),
    ));

    let trusted = reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(cert.cert_pem.as_bytes()).expect("PEM")])
        .build()
        .expect("a client");
    let url = format!("https://127.0.0.1:{port}{PROTECTED}");
    let response = trusted
        .get(&url)
        .header(AUTHORIZATION, format!("Bearer {token}"))
        .send()
        .await
        .expect("an HTTPS response");
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response.version(),
        reqwest::Version::HTTP_2,
        "ALPN offers h2"
    );
    assert_eq!(response.text().await.expect("a body"), "secret");
    let (status, challenge, _) = get(&trusted, &url, None).await;
    assert_eq!(
        (status, challenge.as_deref()),
        (StatusCode::UNAUTHORIZED, Some(CHALLENGE))
    );

    // A client that trusts another certificate does not get through the handshake.
    let other = certificate();
    let distrustful = reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(other.cert_pem.as_bytes()).expect("PEM")])
        .build()
        .expect("a client");
    assert!(distrustful.get(&url).send().await.is_err());
    // Plain HTTP on the HTTPS port gets no HTTP answer.
    let plain = client()
        .get(format!("http://127.0.0.1:{port}{HEALTH}"))
        .send()
        .await;
    assert!(
        plain
            .map(|response| !response.status().is_success())
            .unwrap_or(true)
    );

    stopping.drain.cancel();
    tokio::time::timeout(Duration::from_secs(10), server)
        .await
        .expect("the server stops after shutdown")
        .expect("the server task did not panic");
}

#[test]
fn tls_errors_name_the_file_at_fault() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let (a, b) = (certificate(), certificate());

    let mismatched = tls_files(dir.path(), &a.cert_pem, &b.key_pem);
    let error =
        diagmon::tls::load_server_config(&mismatched).expect_err("a key from another certificate");
    assert!(
        matches!(error, diagmon::tls::TlsError::Mismatch { .. }),
        "{error}"
    );
    assert!(
        error.to_string().contains("key.pem") && error.to_string().contains("cert.pem"),
        "{error}"
    );

    let missing = diagmon::tls::TlsConfig {
        certificate: mismatched.certificate.clone(),
        key: dir.path().join("absent-key.pem"),
    };
    let error = diagmon::tls::load_server_config(&missing)
        .expect_err("a missing key")
        .to_string();
    assert!(
        error.contains("absent-key.pem") && error.contains("tls.key"),
        "{error}"
    );

    let no_key = tls_files(dir.path(), &a.cert_pem, &a.cert_pem);
    let error = diagmon::tls::load_server_config(&no_key)
        .expect_err("no key in the key file")
        .to_string();
    assert!(error.contains("holds no PEM private key"), "{error}");

    let good = tls_files(dir.path(), &a.cert_pem, &a.key_pem);
    diagmon::tls::load_server_config(&good).expect("a matching pair loads");
}

#[tokio::test]
async fn the_binary_serves_https_urls_from_the_tls_section() {
    diagmon::tls::install_crypto_provider();
    let dir = tempfile::tempdir().expect("a temporary directory");
    let cert = certificate();
    let tls = tls_files(dir.path(), &cert.cert_pem, &cert.key_pem);
    let config = format!(
        "[tls]\ncertificate = {:?}\nkey = {:?}\n",
        tls.certificate.display().to_string(),
        tls.key.display().to_string()
    );
    let monitor = Monitor::start(&config, &["--temp-apikey", "--urls", "https://127.0.0.1:0"]);
    let lines = monitor.stdout_lines();
    let https = lines
        .iter()
        .find_map(|line| line.strip_prefix("diagmon listening on https://"))
        .expect("an https listener");
    let token = lines
        .iter()
        .find_map(|line| line.strip_prefix("Authorization: Bearer "))
        .expect("the temporary token");
    let client = reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(cert.cert_pem.as_bytes()).expect("PEM")])
        .build()
        .expect("a client");
    let url = format!("https://{https}/processes");
    let denied = client.get(&url).send().await.expect("https answers");
    assert_eq!(denied.status(), reqwest::StatusCode::UNAUTHORIZED);
    let allowed = client
        .get(&url)
        .bearer_auth(token)
        .send()
        .await
        .expect("https answers");
    assert_eq!(allowed.status(), reqwest::StatusCode::OK);

    let missing = tempfile::tempdir().expect("a temporary directory");
    let output = std::process::Command::new(diagmon_tests::monitor::monitor_binary())
        .args([
            "collect",
            "--no-auth",
            "--urls",
            "https://127.0.0.1:0",
            "--config",
        ])
        .arg(missing.path().join("none.toml"))
        .output()
        .expect("run diagmon");
    assert!(!output.status.success());
    std::fs::write(missing.path().join("none.toml"), "").expect("write");
    let output = std::process::Command::new(diagmon_tests::monitor::monitor_binary())
        .args([
            "collect",
            "--no-auth",
            "--urls",
            "https://127.0.0.1:0",
            "--config",
        ])
        .arg(missing.path().join("none.toml"))
        .output()
        .expect("run diagmon");
    assert!(!output.status.success());
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("no [tls] certificate"),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}
