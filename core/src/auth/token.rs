//! Checking one bearer token (a compact JWS) against the configured API key.
//!
//! The order matters: the header's `alg` must be one the key accepts, then the signature must
//! verify, and only then are the claims read (`exp` required, `nbf` honoured, `sub`, `iss` and
//! `aud` equal to the configuration). Every failure becomes a [`Rejection`], which is logged
//! at debug level and never shown to the client.

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Map, Value};

use super::ApiKeyConfig;
use super::keys::{Algorithm, KeyError, VerifyingKey};

/// The `iss` diagmon's `generatekey` writes and expects by default.
pub const DEFAULT_ISSUER: &str = "diagmon-generatekey";
/// The `aud` diagmon's `generatekey` writes and expects by default.
pub const DEFAULT_AUDIENCE: &str = "diagmon";
/// The `iss` of dotnet-monitor's `generatekey`; set `issuer` to it to accept its keys.
pub const DOTNET_MONITOR_ISSUER: &str =
    "https://github.com/dotnet/dotnet-monitor/generatekey+MonitorApiKey";
/// The `aud` dotnet-monitor requires; set `audience` to it to accept its keys.
pub const DOTNET_MONITOR_AUDIENCE: &str = "https://github.com/dotnet/dotnet-monitor";

/// How far `exp` and `nbf` may be off to allow for clock skew between machines.
pub const CLOCK_SKEW: Duration = Duration::from_secs(60);

/// Tokens longer than this are refused unread (a generated one is about 400 bytes).
const MAX_TOKEN_LEN: usize = 16 * 1024;

/// Why a configured API key cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ApiKeyConfigError {
    /// `subject` is empty.
    #[error(
        "`authentication.api_key.subject` is empty; set it to the `sub` of the tokens to accept (`diagmon generatekey` prints one)"
    )]
    EmptySubject,
    /// `issuer` or `audience` is set but empty.
    #[error("`authentication.api_key.{0}` is empty; remove it to use diagmon's default")]
    EmptyClaim(&'static str),
    /// The public key cannot be used.
    #[error("`authentication.api_key.public_key`: {0}")]
    Key(#[from] KeyError),
}

/// Why a token was refused. For the server log only: clients get a bare 401.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Rejection {
    /// Not three base64url parts with JSON header and payload, or too long.
    Malformed(&'static str),
    /// The header's `alg` is not one the configured key accepts.
    Algorithm(String),
    /// The header carries `crit` or a `typ` other than JWT.
    Header(&'static str),
    /// The signature does not verify.
    Signature,
    /// `exp` is in the past (beyond the clock skew).
    Expired,
    /// `nbf` is in the future (beyond the clock skew).
    NotYetValid,
    /// A required claim is absent or of the wrong type.
    MissingClaim(&'static str),
    /// A claim has the wrong value.
    WrongClaim(&'static str),
    /// No usable key is configured, so nothing is accepted.
    NoKey,
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Rejection::Malformed(what) => write!(f, "malformed token: {what}"),
            Rejection::Algorithm(alg) => write!(f, "algorithm `{alg}` is not accepted by the key"),
            Rejection::Header(what) => write!(f, "unacceptable header: {what}"),
            Rejection::Signature => f.write_str("the signature does not verify"),
            Rejection::Expired => f.write_str("the token has expired"),
            Rejection::NotYetValid => f.write_str("the token is not valid yet (`nbf`)"),
            Rejection::MissingClaim(claim) => write!(f, "the claim `{claim}` is missing"),
            Rejection::WrongClaim(claim) => write!(f, "the claim `{claim}` does not match"),
            Rejection::NoKey => f.write_str("no valid API key is configured"),
        }
    }
}

/// Accepts exactly the tokens one `[authentication.api_key]` describes.
#[derive(Debug)]
pub(crate) struct TokenValidator {
    key: VerifyingKey,
    subject: String,
    issuer: String,
    audience: String,
}

impl TokenValidator {
    /// Builds the validator for `config`.
    pub(crate) fn new(config: &ApiKeyConfig) -> Result<Self, ApiKeyConfigError> {
        if config.subject.is_empty() {
            return Err(ApiKeyConfigError::EmptySubject);
        }
        let issuer = non_empty(config.issuer.as_deref(), "issuer", DEFAULT_ISSUER)?;
        let audience = non_empty(config.audience.as_deref(), "audience", DEFAULT_AUDIENCE)?;
        Ok(TokenValidator {
            key: VerifyingKey::from_base64url_jwk(&config.public_key)?,
            subject: config.subject.clone(),
            issuer,
            audience,
        })
    }

    /// Whether the configured JWK also carried private members.
    pub(crate) fn key_has_private_parts(&self) -> bool {
        self.key.has_private_parts()
    }

    /// Checks `token` as of `now`.
    pub(crate) fn validate(&self, token: &str, now: SystemTime) -> Result<(), Rejection> {
        if token.len() > MAX_TOKEN_LEN {
            return Err(Rejection::Malformed("too long"));
        }
        let mut parts = token.split('.');
        let (Some(header), Some(payload), Some(signature), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(Rejection::Malformed("not three dot-separated parts"));
        };
        let header = decode_object(header).ok_or(Rejection::Malformed("header"))?;
        let alg = header
            .get("alg")
            .and_then(Value::as_str)
            .ok_or(Rejection::Malformed("no `alg` in the header"))?;
        let algorithm = Algorithm::from_name(alg)
            .filter(|algorithm| self.key.algorithms().contains(algorithm))
            .ok_or_else(|| Rejection::Algorithm(alg.to_owned()))?;
        if header.contains_key("crit") {
            return Err(Rejection::Header("`crit` extensions are not supported"));
        }
        match header.get("typ") {
            None => {}
            Some(Value::String(typ)) if typ.eq_ignore_ascii_case("JWT") => {}
            Some(_) => return Err(Rejection::Header("`typ` is not JWT")),
        }
        // The signed message is the first two parts exactly as sent.
        let message_len = token.len() - signature.len() - 1;
        if !self
            .key
            .verify(algorithm, &token.as_bytes()[..message_len], signature)
        {
            return Err(Rejection::Signature);
        }
        let claims = decode_object(payload).ok_or(Rejection::Malformed("payload"))?;
        self.check_claims(&claims, now)
    }

    fn check_claims(&self, claims: &Map<String, Value>, now: SystemTime) -> Result<(), Rejection> {
        let now = now
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs_f64();
        let skew = CLOCK_SKEW.as_secs_f64();
        let exp = numeric_date(claims, "exp")?.ok_or(Rejection::MissingClaim("exp"))?;
        if now > exp + skew {
            return Err(Rejection::Expired);
        }
        if let Some(nbf) = numeric_date(claims, "nbf")?
            && now + skew < nbf
        {
            return Err(Rejection::NotYetValid);
        }
        expect_string(claims, "sub", &self.subject)?;
        expect_string(claims, "iss", &self.issuer)?;
        match claims.get("aud") {
            Some(Value::String(aud)) if *aud == self.audience => Ok(()),
            Some(Value::Array(auds)) if auds.iter().any(|aud| *aud == *self.audience) => Ok(()),
            Some(Value::String(_) | Value::Array(_)) => Err(Rejection::WrongClaim("aud")),
            _ => Err(Rejection::MissingClaim("aud")),
        }
    }
}

fn non_empty(
    value: Option<&str>,
    name: &'static str,
    default: &str,
) -> Result<String, ApiKeyConfigError> {
    match value {
        None => Ok(default.to_owned()),
        Some("") => Err(ApiKeyConfigError::EmptyClaim(name)),
        Some(value) => Ok(value.to_owned()),
    }
}

/// Decodes one JWS part (unpadded base64url) into a JSON object.
fn decode_object(part: &str) -> Option<Map<String, Value>> {
    let bytes = URL_SAFE_NO_PAD.decode(part).ok()?;
    match serde_json::from_slice(&bytes).ok()? {
        Value::Object(map) => Some(map),
        _ => None,
    }
}

/// A NumericDate claim: absent is `None`, present but not a finite number is an error.
fn numeric_date(claims: &Map<String, Value>, name: &'static str) -> Result<Option<f64>, Rejection> {
    match claims.get(name) {
        None => Ok(None),
        Some(value) => value
            .as_f64()
            .filter(|date| date.is_finite())
            .map(Some)
            .ok_or(Rejection::MissingClaim(name)),
    }
}

fn expect_string(
    claims: &Map<String, Value>,
    name: &'static str,
    expected: &str,
) -> Result<(), Rejection> {
    match claims.get(name) {
        Some(Value::String(value)) if value == expected => Ok(()),
        Some(Value::String(_)) => Err(Rejection::WrongClaim(name)),
        _ => Err(Rejection::MissingClaim(name)),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    //! Unit tests sign tokens by hand so that every malformation can be built.

    use super::*;
    use aws_lc_rs::rand::SystemRandom;
    use aws_lc_rs::signature::{
        ECDSA_P256_SHA256_FIXED_SIGNING, ECDSA_P384_SHA384_FIXED_SIGNING,
        ECDSA_P521_SHA512_FIXED_SIGNING, EcdsaKeyPair, EcdsaSigningAlgorithm, KeyPair,
        RSA_PKCS1_SHA256, RSA_PKCS1_SHA512, RsaEncoding, RsaKeyPair,
    };
    use serde_json::json;

    /// A signing key of any accepted kind, with the public JWK that verifies it.
    pub(crate) enum TestKey {
        Ec(EcdsaKeyPair, &'static str),
        Rsa(RsaKeyPair),
    }

    impl TestKey {
        pub(crate) fn ec(alg: &'static EcdsaSigningAlgorithm, curve: &'static str) -> Self {
            TestKey::Ec(EcdsaKeyPair::generate(alg).unwrap(), curve)
        }

        pub(crate) fn p384() -> Self {
            Self::ec(&ECDSA_P384_SHA384_FIXED_SIGNING, "P-384")
        }

        pub(crate) fn rsa() -> Self {
            TestKey::Rsa(RsaKeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048).unwrap())
        }

        pub(crate) fn jwk(&self) -> Value {
            match self {
                TestKey::Ec(pair, curve) => {
                    let point = pair.public_key().as_ref();
                    let (x, y) = point[1..].split_at((point.len() - 1) / 2);
                    json!({"kty": "EC", "crv": curve, "x": URL_SAFE_NO_PAD.encode(x), "y": URL_SAFE_NO_PAD.encode(y)})
                }
                TestKey::Rsa(pair) => {
                    let components = aws_lc_rs::signature::RsaPublicKeyComponents::<Vec<u8>>::from(
                        pair.public_key(),
                    );
                    json!({"kty": "RSA", "n": URL_SAFE_NO_PAD.encode(components.n), "e": URL_SAFE_NO_PAD.encode(components.e)})
                }
            }
        }

        pub(crate) fn public_key(&self) -> String {
            URL_SAFE_NO_PAD.encode(self.jwk().to_string())
        }

        fn sign_with(&self, encoding: &'static dyn RsaEncoding, message: &[u8]) -> Vec<u8> {
            let rng = SystemRandom::new();
            match self {
                TestKey::Ec(pair, _) => pair.sign(&rng, message).unwrap().as_ref().to_vec(),
                TestKey::Rsa(pair) => {
                    let mut signature = vec![0; pair.public_modulus_len()];
                    pair.sign(encoding, &rng, message, &mut signature).unwrap();
                    signature
                }
            }
        }

        /// A compact JWS of `header` and `claims` signed by this key.
        pub(crate) fn token(&self, header: &Value, claims: &Value) -> String {
            let message = format!(
                "{}.{}",
                URL_SAFE_NO_PAD.encode(header.to_string()),
                URL_SAFE_NO_PAD.encode(claims.to_string())
            );
            let encoding: &'static dyn RsaEncoding = if header["alg"] == "RS512" {
                &RSA_PKCS1_SHA512
            } else {
                &RSA_PKCS1_SHA256
            };
            let signature = self.sign_with(encoding, message.as_bytes());
            format!("{message}.{}", URL_SAFE_NO_PAD.encode(signature))
        }
    }

    fn now() -> SystemTime {
        SystemTime::now()
    }

    fn unix(time: SystemTime) -> u64 {
        time.duration_since(UNIX_EPOCH).unwrap().as_secs()
    }

    fn good_claims() -> Value {
        json!({"sub": "me", "iss": DEFAULT_ISSUER, "aud": DEFAULT_AUDIENCE, "exp": unix(now()) + 3600})
    }

    fn validator(key: &TestKey) -> TokenValidator {
        TokenValidator::new(&ApiKeyConfig {
            subject: "me".into(),
            public_key: key.public_key(),
            issuer: None,
            audience: None,
        })
        .unwrap()
    }

    fn check(validator: &TokenValidator, token: &str) -> Result<(), Rejection> {
        validator.validate(token, now())
    }

    #[test]
    fn every_curve_and_rsa_accept_their_own_tokens() {
        let cases = [
            (
                TestKey::ec(&ECDSA_P256_SHA256_FIXED_SIGNING, "P-256"),
                "ES256",
            ),
            (TestKey::p384(), "ES384"),
            (
                TestKey::ec(&ECDSA_P521_SHA512_FIXED_SIGNING, "P-521"),
                "ES512",
            ),
            (TestKey::rsa(), "RS256"),
        ];
        for (key, alg) in cases {
            let token = key.token(&json!({"alg": alg, "typ": "JWT"}), &good_claims());
            assert_eq!(check(&validator(&key), &token), Ok(()), "{alg}");
        }
    }

    #[test]
    fn rsa_accepts_rs512_and_refuses_it_when_the_jwk_pins_rs256() {
        let key = TestKey::rsa();
        let token = key.token(&json!({"alg": "RS512"}), &good_claims());
        assert_eq!(check(&validator(&key), &token), Ok(()));
        let mut jwk = key.jwk();
        jwk["alg"] = json!("RS256");
        let pinned = TokenValidator::new(&ApiKeyConfig {
            subject: "me".into(),
            public_key: URL_SAFE_NO_PAD.encode(jwk.to_string()),
            issuer: None,
            audience: None,
        })
        .unwrap();
        assert_eq!(
            check(&pinned, &token),
            Err(Rejection::Algorithm("RS512".into()))
        );
    }

    #[test]
    fn the_key_not_the_token_picks_the_algorithm() {
        let key = TestKey::p384();
        let validator = validator(&key);
        let header = URL_SAFE_NO_PAD.encode(r#"{"alg":"none","typ":"JWT"}"#);
        let claims = URL_SAFE_NO_PAD.encode(good_claims().to_string());
        assert_eq!(
            check(&validator, &format!("{header}.{claims}.")),
            Err(Rejection::Algorithm("none".into()))
        );
        // A P-384 key refuses an ES256 token even if the signature were valid for P-256.
        let other = TestKey::ec(&ECDSA_P256_SHA256_FIXED_SIGNING, "P-256");
        let token = other.token(&json!({"alg": "ES256"}), &good_claims());
        assert_eq!(
            check(&validator, &token),
            Err(Rejection::Algorithm("ES256".into()))
        );
    }

    #[test]
    fn claims_are_checked_after_the_signature() {
        let key = TestKey::p384();
        let validator = validator(&key);
        let header = json!({"alg": "ES384", "typ": "JWT"});
        let exp = unix(now());
        let cases = [
            (json!({"exp": exp - 61}), Rejection::Expired),
            (json!({"exp": null}), Rejection::MissingClaim("exp")),
            (json!({"exp": "tomorrow"}), Rejection::MissingClaim("exp")),
            (json!({"nbf": exp + 120}), Rejection::NotYetValid),
            (json!({"sub": "you"}), Rejection::WrongClaim("sub")),
            (json!({"sub": 7}), Rejection::MissingClaim("sub")),
            (json!({"iss": "someone"}), Rejection::WrongClaim("iss")),
            (json!({"iss": null}), Rejection::MissingClaim("iss")),
            (json!({"aud": "other"}), Rejection::WrongClaim("aud")),
            (json!({"aud": ["a", "b"]}), Rejection::WrongClaim("aud")),
            (json!({"aud": null}), Rejection::MissingClaim("aud")),
        ];
        for (change, expected) in cases {
            let mut claims = good_claims();
            for (name, value) in change.as_object().unwrap() {
                if value.is_null() {
                    claims.as_object_mut().unwrap().remove(name);
                } else {
                    claims[name] = value.clone();
                }
            }
            let result = check(&validator, &key.token(&header, &claims));
            assert_eq!(result, Err(expected), "{claims}");
        }
        let mut claims = good_claims();
        claims["exp"] = json!(exp - 30);
        assert_eq!(
            check(&validator, &key.token(&header, &claims)),
            Ok(()),
            "within the skew"
        );
        let mut claims = good_claims();
        claims["aud"] = json!(["other", DEFAULT_AUDIENCE]);
        assert_eq!(check(&validator, &key.token(&header, &claims)), Ok(()));
    }

    #[test]
    fn dotnet_monitor_issuer_and_audience_can_be_configured() {
        let key = TestKey::p384();
        let validator = TokenValidator::new(&ApiKeyConfig {
            subject: "me".into(),
            public_key: key.public_key(),
            issuer: Some(DOTNET_MONITOR_ISSUER.into()),
            audience: Some(DOTNET_MONITOR_AUDIENCE.into()),
        })
        .unwrap();
        let mut claims = good_claims();
        claims["iss"] = json!(DOTNET_MONITOR_ISSUER);
        claims["aud"] = json!(DOTNET_MONITOR_AUDIENCE);
        let token = key.token(&json!({"alg": "ES384", "typ": "JWT"}), &claims);
        assert_eq!(check(&validator, &token), Ok(()));
    }

    #[test]
    fn tampering_and_malformed_tokens_are_refused() {
        let key = TestKey::p384();
        let validator = validator(&key);
        let token = key.token(&json!({"alg": "ES384"}), &good_claims());
        let (message, signature) = token.rsplit_once('.').unwrap();
        let mut claims = good_claims();
        claims["sub"] = json!("mf");
        let forged = format!(
            "{}.{}.{signature}",
            message.split('.').next().unwrap(),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        assert_eq!(check(&validator, &forged), Err(Rejection::Signature));
        for bad in ["", "a", "a.b", "a.b.c.d", "!!.b.c", &format!("{token}.x")] {
            assert!(
                matches!(check(&validator, bad), Err(Rejection::Malformed(_))),
                "{bad}"
            );
        }
        let with_crit = key.token(&json!({"alg": "ES384", "crit": ["exp"]}), &good_claims());
        assert!(matches!(
            check(&validator, &with_crit),
            Err(Rejection::Header(_))
        ));
        let jwe_typ = key.token(&json!({"alg": "ES384", "typ": "JWE"}), &good_claims());
        assert!(matches!(
            check(&validator, &jwe_typ),
            Err(Rejection::Header(_))
        ));
        assert!(matches!(
            check(&validator, &"a".repeat(MAX_TOKEN_LEN + 1)),
            Err(Rejection::Malformed(_))
        ));
    }

    #[test]
    fn empty_subject_issuer_or_audience_is_a_config_error() {
        let key = TestKey::p384();
        let mut config = ApiKeyConfig {
            subject: String::new(),
            public_key: key.public_key(),
            issuer: None,
            audience: None,
        };
        assert!(matches!(
            TokenValidator::new(&config),
            Err(ApiKeyConfigError::EmptySubject)
        ));
        config.subject = "me".into();
        config.audience = Some(String::new());
        let error = TokenValidator::new(&config).unwrap_err().to_string();
        assert!(error.contains("audience"), "{error}");
    }
}
