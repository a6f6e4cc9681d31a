//! The configured public key: a base64url-encoded JSON Web Key (RFC 7517), parsed once into
//! the one verifier and the exact set of `alg` values it accepts.
//!
//! The key, never the token, decides the algorithm: an EC key on P-256, P-384 or P-521 accepts
//! only ES256, ES384 or ES512 respectively; an RSA key accepts RS256, RS384 and RS512 (or only
//! its own `alg` when the JWK names one). HMAC, `none`, PSS and EdDSA tokens can never match,
//! so a token cannot talk the verifier into treating the public key as an HMAC secret.
//!
//! Field names are matched case-insensitively, so the PascalCase JWKs that dotnet-monitor's
//! `generatekey` prints (`{"Kty":"EC","Crv":"P-384","X":..}`) parse as they are.

use std::fmt;

use aws_lc_rs::signature::{
    ECDSA_P256_SHA256_FIXED, ECDSA_P384_SHA384_FIXED, ECDSA_P521_SHA512_FIXED, ParsedPublicKey,
    RSA_PKCS1_2048_8192_SHA256, RSA_PKCS1_2048_8192_SHA384, RSA_PKCS1_2048_8192_SHA512,
    RsaParameters, RsaPublicKeyComponents,
};
use base64::Engine;
use base64::alphabet;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use jsonwebtoken::DecodingKey;
use serde_json::{Map, Value};

/// Base64url that takes input with or without `=` padding (JWK producers differ).
pub(crate) const BASE64URL_LENIENT: GeneralPurpose = GeneralPurpose::new(
    &alphabet::URL_SAFE,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// RSA moduli below this many bits are refused (the verifier's lower bound too).
const MIN_RSA_BITS: usize = 2048;
/// RSA moduli above this many bits are refused (the verifier's upper bound).
const MAX_RSA_BITS: usize = 8192;

/// A JWS algorithm diagmon accepts. Everything else (`none`, `HS*`, `PS*`, `EdDSA`) is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Algorithm {
    /// ECDSA on P-256 with SHA-256.
    Es256,
    /// ECDSA on P-384 with SHA-384.
    Es384,
    /// ECDSA on P-521 with SHA-512.
    Es512,
    /// RSASSA-PKCS1-v1_5 with SHA-256.
    Rs256,
    /// RSASSA-PKCS1-v1_5 with SHA-384.
    Rs384,
    /// RSASSA-PKCS1-v1_5 with SHA-512.
    Rs512,
}

impl Algorithm {
    /// The `alg` header value for this algorithm.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Algorithm::Es256 => "ES256",
            Algorithm::Es384 => "ES384",
            Algorithm::Es512 => "ES512",
            Algorithm::Rs256 => "RS256",
            Algorithm::Rs384 => "RS384",
            Algorithm::Rs512 => "RS512",
        }
    }

    /// Parses an `alg` value; `None` for anything diagmon does not accept.
    pub(crate) fn from_name(name: &str) -> Option<Self> {
        [
            Algorithm::Es256,
            Algorithm::Es384,
            Algorithm::Es512,
            Algorithm::Rs256,
            Algorithm::Rs384,
            Algorithm::Rs512,
        ]
        .into_iter()
        .find(|alg| alg.name() == name)
    }

    /// The same algorithm as `jsonwebtoken` names it; `None` for ES512, which jsonwebtoken 11
    /// does not implement (diagmon verifies it with aws-lc-rs directly).
    fn jsonwebtoken(self) -> Option<jsonwebtoken::Algorithm> {
        match self {
            Algorithm::Es256 => Some(jsonwebtoken::Algorithm::ES256),
            Algorithm::Es384 => Some(jsonwebtoken::Algorithm::ES384),
            Algorithm::Es512 => None,
            Algorithm::Rs256 => Some(jsonwebtoken::Algorithm::RS256),
            Algorithm::Rs384 => Some(jsonwebtoken::Algorithm::RS384),
            Algorithm::Rs512 => Some(jsonwebtoken::Algorithm::RS512),
        }
    }

    fn rsa_parameters(self) -> Option<&'static RsaParameters> {
        match self {
            Algorithm::Rs256 => Some(&RSA_PKCS1_2048_8192_SHA256),
            Algorithm::Rs384 => Some(&RSA_PKCS1_2048_8192_SHA384),
            Algorithm::Rs512 => Some(&RSA_PKCS1_2048_8192_SHA512),
            _ => None,
        }
    }
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Why `[authentication.api_key] public_key` cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// Not base64url.
    #[error(
        "`public_key` is not base64url ({0}); it must be the base64url encoding of a JSON Web Key, as `diagmon generatekey` prints it"
    )]
    NotBase64(base64::DecodeError),
    /// Not a JSON object.
    #[error(
        "`public_key` does not decode to a JSON Web Key object ({0}); it must be the base64url encoding of a JWK such as {{\"kty\":\"EC\",\"crv\":\"P-384\",\"x\":..,\"y\":..}}"
    )]
    NotJson(String),
    /// A required member is missing or not a string.
    #[error("the JSON Web Key in `public_key` has no string member `{0}`")]
    MissingMember(&'static str),
    /// `kty` is not `EC` or `RSA`.
    #[error("the JSON Web Key in `public_key` has key type `{0}`; use an `EC` or `RSA` key")]
    UnsupportedKeyType(String),
    /// `crv` is not P-256, P-384 or P-521.
    #[error("the EC key in `public_key` is on curve `{0}`; use P-256, P-384 or P-521")]
    UnsupportedCurve(String),
    /// A coordinate or RSA component is not base64url.
    #[error("the JSON Web Key member `{member}` is not base64url ({source})")]
    BadComponent {
        /// The JWK member.
        member: &'static str,
        /// The decoding failure.
        source: base64::DecodeError,
    },
    /// The EC point is malformed or not on the curve.
    #[error("the EC key in `public_key` is not a valid {curve} public key (wrong `x`/`y`)")]
    BadEcPoint {
        /// The curve named by `crv`.
        curve: &'static str,
    },
    /// The RSA modulus is too small or too large.
    #[error(
        "the RSA key in `public_key` has a {bits}-bit modulus; use a key of {MIN_RSA_BITS} to {MAX_RSA_BITS} bits"
    )]
    RsaKeySize {
        /// The modulus size.
        bits: usize,
    },
    /// The RSA components do not form a key.
    #[error("the RSA key in `public_key` is not a valid public key (wrong `n`/`e`)")]
    BadRsaKey,
    /// `alg` names an algorithm diagmon does not accept, or one that does not fit the key.
    #[error(
        "the JSON Web Key in `public_key` says `alg` is `{alg}`, which this {kty} key cannot be used with; diagmon accepts {accepted}"
    )]
    AlgorithmMismatch {
        /// The JWK's `alg`.
        alg: String,
        /// The JWK's `kty`.
        kty: &'static str,
        /// What this key would accept.
        accepted: String,
    },
    /// `use` is not `sig`.
    #[error(
        "the JSON Web Key in `public_key` is for use `{0}`; a key that verifies API keys must have `use` `sig` or none"
    )]
    NotForSignatures(String),
}

/// A public key ready to verify tokens.
pub(crate) struct VerifyingKey {
    algorithms: Vec<Algorithm>,
    material: Material,
    has_private_parts: bool,
}

enum Material {
    /// ES256/ES384 through jsonwebtoken; ES512 through the parsed aws-lc-rs key.
    Ec {
        decoding: DecodingKey,
        parsed: ParsedPublicKey,
    },
    /// One parsed key per accepted RSA algorithm (the parameters carry the digest).
    Rsa {
        decoding: DecodingKey,
        parsed: Vec<(Algorithm, ParsedPublicKey)>,
    },
}

impl VerifyingKey {
    /// Parses `public_key` (base64url of a JWK).
    pub(crate) fn from_base64url_jwk(public_key: &str) -> Result<Self, KeyError> {
        let json = BASE64URL_LENIENT
            .decode(public_key.trim())
            .map_err(KeyError::NotBase64)?;
        let jwk: Map<String, Value> = match serde_json::from_slice(&json) {
            Ok(Value::Object(map)) => map,
            Ok(other) => return Err(KeyError::NotJson(format!("found {}", json_kind(&other)))),
            Err(error) => return Err(KeyError::NotJson(error.to_string())),
        };
        let jwk = Jwk(jwk);
        if let Some(key_use) = jwk.string("use")
            && key_use != "sig"
        {
            return Err(KeyError::NotForSignatures(key_use.to_owned()));
        }
        let kty = jwk.string("kty").ok_or(KeyError::MissingMember("kty"))?;
        match kty {
            "EC" => Self::ec(&jwk),
            "RSA" => Self::rsa(&jwk),
            other => Err(KeyError::UnsupportedKeyType(other.to_owned())),
        }
    }

    fn ec(jwk: &Jwk) -> Result<Self, KeyError> {
        let crv = jwk.string("crv").ok_or(KeyError::MissingMember("crv"))?;
        let (curve, algorithm, coordinate_len, verification) = match crv {
            "P-256" => ("P-256", Algorithm::Es256, 32, &ECDSA_P256_SHA256_FIXED),
            "P-384" => ("P-384", Algorithm::Es384, 48, &ECDSA_P384_SHA384_FIXED),
            "P-521" => ("P-521", Algorithm::Es512, 66, &ECDSA_P521_SHA512_FIXED),
            other => return Err(KeyError::UnsupportedCurve(other.to_owned())),
        };
        let x = jwk.component("x")?;
        let y = jwk.component("y")?;
        if x.len() != coordinate_len || y.len() != coordinate_len {
            return Err(KeyError::BadEcPoint { curve });
        }
        let mut point = Vec::with_capacity(1 + 2 * coordinate_len);
        point.push(0x04);
        point.extend_from_slice(&x);
        point.extend_from_slice(&y);
        let parsed = ParsedPublicKey::new(verification, &point)
            .map_err(|_| KeyError::BadEcPoint { curve })?;
        let decoding = DecodingKey::from_ec_der(&point);
        let algorithms = restrict_to_jwk_alg(jwk, "EC", vec![algorithm])?;
        Ok(VerifyingKey {
            algorithms,
            material: Material::Ec { decoding, parsed },
            has_private_parts: jwk.has_any(&["d"]),
        })
    }

    fn rsa(jwk: &Jwk) -> Result<Self, KeyError> {
        let n = strip_leading_zeros(jwk.component("n")?);
        let e = strip_leading_zeros(jwk.component("e")?);
        let bits = match n.first() {
            Some(first) => n.len() * 8 - first.leading_zeros() as usize,
            None => 0,
        };
        if !(MIN_RSA_BITS..=MAX_RSA_BITS).contains(&bits) {
            return Err(KeyError::RsaKeySize { bits });
        }
        let algorithms = restrict_to_jwk_alg(
            jwk,
            "RSA",
            vec![Algorithm::Rs256, Algorithm::Rs384, Algorithm::Rs512],
        )?;
        let components = RsaPublicKeyComponents { n: &n, e: &e };
        let mut parsed = Vec::with_capacity(algorithms.len());
        for &algorithm in &algorithms {
            let parameters = algorithm.rsa_parameters().ok_or(KeyError::BadRsaKey)?;
            let key = components
                .to_parsed_public_key(parameters)
                .map_err(|_| KeyError::BadRsaKey)?;
            parsed.push((algorithm, key));
        }
        Ok(VerifyingKey {
            algorithms,
            material: Material::Rsa {
                decoding: DecodingKey::from_rsa_raw_components(&n, &e),
                parsed,
            },
            has_private_parts: jwk.has_any(&["d", "p", "q", "dp", "dq", "qi"]),
        })
    }

    /// The `alg` values a token may carry to be checked against this key.
    pub(crate) fn algorithms(&self) -> &[Algorithm] {
        &self.algorithms
    }

    /// Whether the JWK also carried private-key members (they are ignored).
    pub(crate) fn has_private_parts(&self) -> bool {
        self.has_private_parts
    }

    /// Checks `signature` (base64url, no padding, as in a JWS) over `message` with `algorithm`,
    /// which the caller has already checked is one of [`Self::algorithms`].
    pub(crate) fn verify(&self, algorithm: Algorithm, message: &[u8], signature: &str) -> bool {
        if !self.algorithms.contains(&algorithm) {
            return false;
        }
        let decoding = match &self.material {
            Material::Ec { decoding, .. } | Material::Rsa { decoding, .. } => decoding,
        };
        match algorithm.jsonwebtoken() {
            Some(jwt_algorithm) => {
                jsonwebtoken::crypto::verify(signature, message, decoding, jwt_algorithm)
                    .unwrap_or(false)
            }
            None => {
                // ES512: jsonwebtoken 11 has no P-521, so verify with aws-lc-rs directly.
                let Ok(signature) =
                    base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(signature)
                else {
                    return false;
                };
                self.parsed_key(algorithm)
                    .is_some_and(|key| key.verify_sig(message, &signature).is_ok())
            }
        }
    }

    fn parsed_key(&self, algorithm: Algorithm) -> Option<&ParsedPublicKey> {
        match &self.material {
            Material::Ec { parsed, .. } => Some(parsed),
            Material::Rsa { parsed, .. } => parsed
                .iter()
                .find(|(alg, _)| *alg == algorithm)
                .map(|(_, key)| key),
        }
    }
}

impl fmt::Debug for VerifyingKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VerifyingKey")
            .field("algorithms", &self.algorithms)
            .finish_non_exhaustive()
    }
}

/// A JWK as a JSON object whose member names are matched case-insensitively.
struct Jwk(Map<String, Value>);

impl Jwk {
    fn get(&self, name: &str) -> Option<&Value> {
        self.0
            .iter()
            .find(|(key, _)| key.eq_ignore_ascii_case(name))
            .map(|(_, value)| value)
            .filter(|value| !value.is_null())
    }

    fn string(&self, name: &str) -> Option<&str> {
        self.get(name).and_then(Value::as_str)
    }

    fn component(&self, name: &'static str) -> Result<Vec<u8>, KeyError> {
        let text = self.string(name).ok_or(KeyError::MissingMember(name))?;
        BASE64URL_LENIENT
            .decode(text)
            .map_err(|source| KeyError::BadComponent {
                member: name,
                source,
            })
    }

    /// Whether any of `members` is present as a non-empty string.
    fn has_any(&self, members: &[&str]) -> bool {
        members
            .iter()
            .any(|member| self.string(member).is_some_and(|value| !value.is_empty()))
    }
}

/// Narrows `candidates` to the JWK's own `alg`, if it names one.
fn restrict_to_jwk_alg(
    jwk: &Jwk,
    kty: &'static str,
    candidates: Vec<Algorithm>,
) -> Result<Vec<Algorithm>, KeyError> {
    let Some(alg) = jwk.string("alg") else {
        return Ok(candidates);
    };
    match Algorithm::from_name(alg) {
        Some(algorithm) if candidates.contains(&algorithm) => Ok(vec![algorithm]),
        _ => Err(KeyError::AlgorithmMismatch {
            alg: alg.to_owned(),
            kty,
            accepted: candidates
                .iter()
                .map(|alg| alg.name())
                .collect::<Vec<_>>()
                .join(", "),
        }),
    }
}

fn strip_leading_zeros(mut bytes: Vec<u8>) -> Vec<u8> {
    let zeros = bytes.iter().take_while(|&&byte| byte == 0).count();
    bytes.drain(..zeros);
    bytes
}

fn json_kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use serde_json::json;

    fn encode(jwk: &Value) -> String {
        URL_SAFE_NO_PAD.encode(jwk.to_string())
    }

    fn p384_jwk() -> Value {
        let key = crate::auth::generate_key(std::time::Duration::from_secs(60)).unwrap();
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(key.public_key).unwrap()).unwrap()
    }

    #[test]
    fn a_generated_p384_key_accepts_only_es384() {
        let key = VerifyingKey::from_base64url_jwk(&encode(&p384_jwk())).unwrap();
        assert_eq!(key.algorithms(), [Algorithm::Es384]);
        assert!(!key.has_private_parts());
    }

    #[test]
    fn pascal_case_members_from_dotnet_monitor_parse() {
        let jwk = p384_jwk();
        let dotnet = json!({
            "AdditionalData": {}, "Alg": null, "Crv": "P-384", "KeyOps": [], "Kty": "EC",
            "X": jwk["x"], "X5c": [], "Y": jwk["y"], "KeySize": 384, "HasPrivateKey": false,
        });
        let key = VerifyingKey::from_base64url_jwk(&encode(&dotnet)).unwrap();
        assert_eq!(key.algorithms(), [Algorithm::Es384]);
    }

    #[test]
    fn private_members_are_noticed() {
        let mut jwk = p384_jwk();
        jwk["d"] = json!("AAAA");
        let key = VerifyingKey::from_base64url_jwk(&encode(&jwk)).unwrap();
        assert!(key.has_private_parts());
    }

    #[test]
    fn padded_base64url_is_accepted() {
        let padded = base64::engine::general_purpose::URL_SAFE.encode(p384_jwk().to_string());
        VerifyingKey::from_base64url_jwk(&padded).unwrap();
    }

    #[test]
    fn bad_keys_are_refused_with_a_reason() {
        let cases: Vec<(String, &str)> = vec![
            ("not base64!".into(), "not base64url"),
            (URL_SAFE_NO_PAD.encode("[1]"), "found an array"),
            (
                encode(&json!({"kty": "oct", "k": "c2VjcmV0"})),
                "key type `oct`",
            ),
            (encode(&json!({"crv": "P-384"})), "no string member `kty`"),
            (
                encode(&json!({"kty": "OKP", "crv": "Ed25519", "x": "AA"})),
                "key type `OKP`",
            ),
            (
                encode(&json!({"kty": "EC", "crv": "secp256k1", "x": "AA", "y": "AA"})),
                "curve `secp256k1`",
            ),
            (
                encode(&json!({"kty": "EC", "crv": "P-256", "x": "AA", "y": "AA"})),
                "not a valid P-256",
            ),
            (
                encode(
                    &json!({"kty": "RSA", "n": URL_SAFE_NO_PAD.encode([0xff; 128]), "e": "AQAB"}),
                ),
                "1024-bit modulus",
            ),
        ];
        for (public_key, expected) in cases {
            let error = VerifyingKey::from_base64url_jwk(&public_key)
                .unwrap_err()
                .to_string();
            assert!(error.contains(expected), "{expected:?} not in {error:?}");
        }
    }

    #[test]
    fn a_point_off_the_curve_is_refused() {
        let mut jwk = p384_jwk();
        let mut y = URL_SAFE_NO_PAD.decode(jwk["y"].as_str().unwrap()).unwrap();
        y[47] ^= 1;
        jwk["y"] = json!(URL_SAFE_NO_PAD.encode(y));
        let error = VerifyingKey::from_base64url_jwk(&encode(&jwk))
            .unwrap_err()
            .to_string();
        assert!(error.contains("not a valid P-384"), "{error}");
    }

    #[test]
    fn the_jwk_alg_must_fit_the_key() {
        let mut jwk = p384_jwk();
        jwk["alg"] = json!("HS256");
        let error = VerifyingKey::from_base64url_jwk(&encode(&jwk))
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("`HS256`") && error.contains("ES384"),
            "{error}"
        );
        jwk["alg"] = json!("ES384");
        VerifyingKey::from_base64url_jwk(&encode(&jwk)).unwrap();
        jwk["use"] = json!("enc");
        let error = VerifyingKey::from_base64url_jwk(&encode(&jwk))
            .unwrap_err()
            .to_string();
        assert!(error.contains("use `enc`"), "{error}");
    }

    #[test]
    fn only_the_six_algorithms_have_names() {
        for name in ["ES256", "ES384", "ES512", "RS256", "RS384", "RS512"] {
            assert_eq!(Algorithm::from_name(name).unwrap().name(), name);
        }
        for name in ["none", "HS256", "PS256", "EdDSA", "es256", ""] {
            assert!(Algorithm::from_name(name).is_none(), "{name}");
        }
    }
}
