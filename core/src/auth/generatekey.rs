//! `diagmon generatekey` and `--temp-apikey`: a fresh P-384 key pair, an ES384 token signed by
//! it, and the configuration that accepts the token, rendered for the place it will go.
//!
//! The key pair comes from aws-lc-rs (already linked for rustls and jsonwebtoken); the private
//! half lives only long enough to sign the one token and is never printed.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_lc_rs::signature::{ECDSA_P384_SHA384_FIXED_SIGNING, EcdsaKeyPair, KeyPair};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::Serialize;
use serde_json::json;

use super::token::{DEFAULT_AUDIENCE, DEFAULT_ISSUER};

/// How long a generated token stays valid unless `--expiration` says otherwise.
pub const DEFAULT_KEY_LIFETIME: Duration = Duration::from_secs(7 * 24 * 60 * 60);

/// The environment variable prefix of `[authentication.api_key]` settings.
const ENV_PREFIX: &str = "DIAGMON_AUTHENTICATION__API_KEY__";

/// A generated API key: the token to send and the settings that accept it.
#[derive(Debug, Clone)]
pub struct GeneratedKey {
    /// The token's `sub`: a random GUID, and the `subject` to configure.
    pub subject: String,
    /// The public half as a base64url-encoded JWK: the `public_key` to configure.
    pub public_key: String,
    /// The signed ES384 JWT to send as `Authorization: Bearer <token>`. A secret.
    pub token: String,
    /// The token's `iss`.
    pub issuer: String,
    /// The token's `aud`.
    pub audience: String,
    /// When the token's `exp` falls.
    pub expires_at: SystemTime,
}

/// Why a key could not be generated.
#[derive(Debug, thiserror::Error)]
pub enum GenerateKeyError {
    /// The expiration is zero or beyond what a timestamp can hold.
    #[error(
        "the expiration {} is out of range; give a positive duration such as `7d` or `90d`",
        humantime::format_duration(*.0)
    )]
    Expiration(Duration),
    /// aws-lc-rs could not make or export a key pair.
    #[error("cannot generate a P-384 key pair: {0}")]
    KeyPair(String),
    /// jsonwebtoken could not sign the token.
    #[error("cannot sign the API key token: {0}")]
    Sign(#[from] jsonwebtoken::errors::Error),
}

/// How `generatekey` prints its result.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum KeyOutputFormat {
    /// The header, then the settings as a JSON config file.
    Json,
    /// The header, then the settings as a TOML config file.
    #[default]
    Text,
    /// The header, then `export` lines for sh, bash and zsh.
    Shell,
    /// The header, then `set` lines for Windows cmd.
    Cmd,
    /// The header, then `$env:` lines for PowerShell.
    Powershell,
    /// One JSON object with the settings and the header, for programs.
    Machinejson,
}

#[derive(Serialize)]
struct Claims<'a> {
    sub: &'a str,
    iss: &'a str,
    aud: &'a str,
    exp: u64,
}

/// Generates a P-384 key pair and an ES384 token (`sub` a random GUID, diagmon's default `iss`
/// and `aud`) that expires after `expiration`.
pub fn generate_key(expiration: Duration) -> Result<GeneratedKey, GenerateKeyError> {
    let expires_at = SystemTime::now()
        .checked_add(expiration)
        .filter(|_| !expiration.is_zero())
        .ok_or(GenerateKeyError::Expiration(expiration))?;
    let exp = expires_at
        .duration_since(UNIX_EPOCH)
        .map_err(|_| GenerateKeyError::Expiration(expiration))?
        .as_secs();
    // A NumericDate must survive a round trip through an f64 (JSON numbers) and JavaScript.
    if exp > (1 << 53) {
        return Err(GenerateKeyError::Expiration(expiration));
    }

    let pair = EcdsaKeyPair::generate(&ECDSA_P384_SHA384_FIXED_SIGNING)
        .map_err(|error| GenerateKeyError::KeyPair(error.to_string()))?;
    let pkcs8 = pair
        .to_pkcs8v1()
        .map_err(|error| GenerateKeyError::KeyPair(error.to_string()))?;
    // The public key is the uncompressed point 0x04 || x || y, 48 bytes each on P-384.
    let Some(coordinates) = pair
        .public_key()
        .as_ref()
        .strip_prefix(&[0x04])
        .filter(|coordinates| coordinates.len() == 96)
    else {
        return Err(GenerateKeyError::KeyPair(
            "the public key is not an uncompressed P-384 point".into(),
        ));
    };
    let (x, y) = coordinates.split_at(48);
    let jwk = json!({
        "kty": "EC",
        "crv": "P-384",
        "x": URL_SAFE_NO_PAD.encode(x),
        "y": URL_SAFE_NO_PAD.encode(y),
    });

    let subject = uuid::Uuid::new_v4().to_string();
    let claims = Claims {
        sub: &subject,
        iss: DEFAULT_ISSUER,
        aud: DEFAULT_AUDIENCE,
        exp,
    };
    let token = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES384),
        &claims,
        &jsonwebtoken::EncodingKey::from_ec_der(pkcs8.as_ref()),
    )?;
    Ok(GeneratedKey {
        subject,
        public_key: URL_SAFE_NO_PAD.encode(jwk.to_string()),
        token,
        issuer: DEFAULT_ISSUER.to_owned(),
        audience: DEFAULT_AUDIENCE.to_owned(),
        expires_at,
    })
}

/// Renders `key` for people (every format but `Machinejson`: the header line, then settings
/// that accept the token) or for programs (`Machinejson`: one JSON object on one line).
pub fn render_key(key: &GeneratedKey, format: KeyOutputFormat) -> String {
    let settings = settings(key);
    let header = format!("Authorization: Bearer {}", key.token);
    let expires = humantime::format_rfc3339_seconds(key.expires_at);
    let intro = format!(
        "Generated an API key for diagmon. Send this header with every request \
         (it expires at {expires}):\n\n{header}\n\n"
    );
    match format {
        KeyOutputFormat::Machinejson => {
            json!({
                "authentication": { "api_key": settings_object(&settings) },
                "authorization_header": format!("Bearer {}", key.token),
                "expires_at": expires.to_string(),
            })
            .to_string()
                + "\n"
        }
        KeyOutputFormat::Text => {
            let mut out =
                intro + "Settings (TOML, e.g. in diagmon.toml):\n\n[authentication.api_key]\n";
            for (name, value) in &settings {
                out += &format!("{name} = {}\n", toml_string(value));
            }
            out
        }
        KeyOutputFormat::Json => {
            let config = json!({"authentication": {"api_key": settings_object(&settings)}});
            let pretty =
                serde_json::to_string_pretty(&config).unwrap_or_else(|_| config.to_string());
            intro + "Settings (JSON, e.g. in diagmon.json):\n\n" + &pretty + "\n"
        }
        KeyOutputFormat::Shell => env_lines(intro, "sh, bash or zsh", &settings, |name, value| {
            format!("export {name}=\"{value}\"")
        }),
        KeyOutputFormat::Cmd => env_lines(intro, "Windows cmd", &settings, |name, value| {
            format!("set {name}={value}")
        }),
        KeyOutputFormat::Powershell => env_lines(intro, "PowerShell", &settings, |name, value| {
            format!("$env:{name} = \"{value}\"")
        }),
    }
}

/// The `[authentication.api_key]` settings that accept `key`, in config order; `issuer` and
/// `audience` only when they differ from diagmon's defaults.
fn settings(key: &GeneratedKey) -> Vec<(&'static str, &str)> {
    let mut settings = vec![
        ("subject", key.subject.as_str()),
        ("public_key", &key.public_key),
    ];
    if key.issuer != DEFAULT_ISSUER {
        settings.push(("issuer", &key.issuer));
    }
    if key.audience != DEFAULT_AUDIENCE {
        settings.push(("audience", &key.audience));
    }
    settings
}

fn settings_object(settings: &[(&str, &str)]) -> serde_json::Value {
    settings
        .iter()
        .map(|(name, value)| ((*name).to_owned(), json!(value)))
        .collect::<serde_json::Map<_, _>>()
        .into()
}

fn env_lines(
    intro: String,
    shell: &str,
    settings: &[(&str, &str)],
    line: impl Fn(&str, &str) -> String,
) -> String {
    let mut out = intro + &format!("Settings (environment variables for {shell}):\n\n");
    for (name, value) in settings {
        let variable = format!("{ENV_PREFIX}{}", name.to_ascii_uppercase());
        out += &line(&variable, value);
        out += "\n";
    }
    out
}

/// A TOML basic string (the values here are GUIDs, base64url and URLs, but quote properly).
fn toml_string(value: &str) -> String {
    toml::Value::String(value.to_owned()).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::{ApiKeyConfig, AuthenticationConfig};

    fn key() -> GeneratedKey {
        generate_key(DEFAULT_KEY_LIFETIME).unwrap()
    }

    #[test]
    fn the_generated_token_is_accepted_by_the_generated_settings() {
        let key = key();
        let validator = crate::auth::token::TokenValidator::new(&ApiKeyConfig {
            subject: key.subject.clone(),
            public_key: key.public_key.clone(),
            issuer: None,
            audience: None,
        })
        .unwrap();
        assert_eq!(validator.validate(&key.token, SystemTime::now()), Ok(()));
        let later = SystemTime::now() + DEFAULT_KEY_LIFETIME + Duration::from_secs(120);
        assert!(validator.validate(&key.token, later).is_err());
        assert!(uuid::Uuid::parse_str(&key.subject).is_ok());
        let header: serde_json::Value = serde_json::from_slice(
            &URL_SAFE_NO_PAD
                .decode(key.token.split('.').next().unwrap())
                .unwrap(),
        )
        .unwrap();
        assert_eq!(header["alg"], "ES384");
        assert_eq!(header["typ"], "JWT");
    }

    #[test]
    fn every_key_is_new() {
        let (a, b) = (key(), key());
        assert_ne!(a.public_key, b.public_key);
        assert_ne!(a.subject, b.subject);
    }

    #[test]
    fn zero_or_huge_expirations_are_refused() {
        for expiration in [Duration::ZERO, Duration::from_secs(u64::MAX / 2)] {
            let error = generate_key(expiration).unwrap_err().to_string();
            assert!(error.contains("out of range"), "{error}");
        }
    }

    #[test]
    fn text_and_json_are_config_files_that_parse() {
        let key = key();
        let text = render_key(&key, KeyOutputFormat::Text);
        assert!(text.contains(&format!("Authorization: Bearer {}\n", key.token)));
        let toml_part = &text[text.find("[authentication").unwrap()..];
        #[derive(serde::Deserialize)]
        struct File {
            authentication: AuthenticationConfig,
        }
        let parsed: File = toml::from_str(toml_part).unwrap();
        let api_key = parsed.authentication.api_key.unwrap();
        assert_eq!(api_key.subject, key.subject);
        assert_eq!(api_key.public_key, key.public_key);

        let json_out = render_key(&key, KeyOutputFormat::Json);
        let parsed: File =
            serde_json::from_str(&json_out[json_out.find("\n{").unwrap()..]).unwrap();
        assert_eq!(parsed.authentication.api_key.unwrap().subject, key.subject);
    }

    #[test]
    fn env_formats_name_the_variables_figment_reads() {
        let key = key();
        let shell = render_key(&key, KeyOutputFormat::Shell);
        assert!(shell.contains(&format!(
            "export DIAGMON_AUTHENTICATION__API_KEY__SUBJECT=\"{}\"\n",
            key.subject
        )));
        let cmd = render_key(&key, KeyOutputFormat::Cmd);
        assert!(cmd.contains(&format!(
            "set DIAGMON_AUTHENTICATION__API_KEY__PUBLIC_KEY={}\n",
            key.public_key
        )));
        let powershell = render_key(&key, KeyOutputFormat::Powershell);
        assert!(powershell.contains(&format!(
            "$env:DIAGMON_AUTHENTICATION__API_KEY__SUBJECT = \"{}\"\n",
            key.subject
        )));
        assert!(!shell.contains("ISSUER"), "defaults are left out");
    }

    #[test]
    fn machinejson_is_one_object_with_the_header() {
        let mut key = key();
        key.audience = crate::auth::DOTNET_MONITOR_AUDIENCE.into();
        let out = render_key(&key, KeyOutputFormat::Machinejson);
        assert_eq!(out.lines().count(), 1);
        let value: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(
            value["authorization_header"],
            format!("Bearer {}", key.token)
        );
        assert_eq!(
            value["authentication"]["api_key"]["subject"],
            key.subject.as_str()
        );
        assert_eq!(
            value["authentication"]["api_key"]["audience"],
            crate::auth::DOTNET_MONITOR_AUDIENCE
        );
    }
}
