//! Secrets in the configuration: which keys hold them (one list, used by `config show`, the
//! object-store grant and anything else that prints configuration), and values that name where
//! a secret is kept instead of holding it: `{ env = "NAME" }` or `{ file = "/path" }`.
//!
//! This module depends on nothing else in the crate, so that both the configuration and the
//! egress host can use it.

use std::path::{Path, PathBuf};

/// The value that replaces a secret wherever configuration is shown.
pub const REDACTED: &str = ":REDACTED:";

/// Words that make a key secret wherever they appear in it (case-insensitive).
const SECRET_WORDS: &[&str] = &[
    "secret",
    "password",
    "passwd",
    "private",
    "token",
    "authorization",
    "cookie",
    "credential",
    "signature",
    "sas",
    "apikey",
    // HTTP headers (a provider's `headers` setting) usually carry credentials.
    "headers",
];

/// True for configuration keys whose values are secrets: never shown by `config show`, in logs
/// or in messages.
///
/// A key is secret when it contains one of the words above, or when its last part (split at `_`,
/// `-` or `.`) is `key` after some other part (`access_key`, `account_key`, `x-api-key`). Keys
/// that only name a secret are not secrets: a bare `key` (a file path in `[tls]`, a filter's
/// property), a `public_key`, and identifiers ending in `_id` (`access_key_id`).
pub fn is_secret_key(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    if key == "public_key" || key.ends_with("_id") || key.ends_with("-id") {
        return false;
    }
    if SECRET_WORDS.iter().any(|word| key.contains(word)) {
        return true;
    }
    let parts: Vec<&str> = key
        .split(['_', '-', '.'])
        .filter(|part| !part.is_empty())
        .collect();
    parts.len() > 1 && parts.last() == Some(&"key")
}

/// Where a configured value comes from when it is not written inline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ValueSource {
    /// `{ env = "NAME" }`: the value of one of diagmon's environment variables.
    Env(String),
    /// `{ file = "/path" }`: the contents of a file, without its trailing newline.
    File(PathBuf),
}

/// Why a [`ValueSource`] could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ValueSourceError {
    /// The environment variable is not set (or not Unicode).
    #[error("the environment variable `{0}` is not set")]
    EnvNotSet(String),
    /// The file cannot be read.
    #[error("the file {} cannot be read: {source}", path.display())]
    File {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
}

impl ValueSource {
    /// The source a JSON value names: an object with the single member `env` (a string) or
    /// `file` (a string); `None` for any other value, which is then a value written inline.
    pub fn from_json(value: &serde_json::Value) -> Option<ValueSource> {
        let object = value.as_object().filter(|object| object.len() == 1)?;
        if let Some(name) = object.get("env").and_then(serde_json::Value::as_str) {
            return Some(ValueSource::Env(name.to_owned()));
        }
        object
            .get("file")
            .and_then(serde_json::Value::as_str)
            .map(|path| ValueSource::File(PathBuf::from(path)))
    }

    /// Reads the value now. Blocking (a file may be read): call it at start-up or on a
    /// blocking thread.
    pub fn read(&self) -> Result<String, ValueSourceError> {
        match self {
            ValueSource::Env(name) => read_env(name),
            ValueSource::File(path) => read_file(path),
        }
    }
}

/// The value of the environment variable `name`.
pub fn read_env(name: &str) -> Result<String, ValueSourceError> {
    std::env::var(name).map_err(|_| ValueSourceError::EnvNotSet(name.to_owned()))
}

/// The contents of `path` without the trailing newline (`\n` or `\r\n`), as secret files are
/// usually written.
pub fn read_file(path: &Path) -> Result<String, ValueSourceError> {
    match std::fs::read_to_string(path) {
        Ok(text) => Ok(text.trim_end_matches(['\r', '\n']).to_owned()),
        Err(source) => Err(ValueSourceError::File {
            path: path.to_owned(),
            source,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_keys_are_recognised_by_their_words() {
        for key in [
            "secret_access_key",
            "access_key",
            "account_key",
            "master_key",
            "service_account_key",
            "sas_token",
            "session_token",
            "private_key",
            "password",
            "Authorization",
            "x-api-key",
            "X-Auth-Token",
            "client_secret",
            "cookie",
            "apikey",
            "headers",
        ] {
            assert!(is_secret_key(key), "{key} is a secret");
        }
        for key in [
            "access_key_id",
            "public_key",
            "key",
            "subject",
            "region",
            "url",
            "name_template",
            "certificate",
            "chunk_kib",
            "allowed_hosts",
        ] {
            assert!(!is_secret_key(key), "{key} is not a secret");
        }
    }

    #[test]
    fn sources_are_read_from_the_environment_or_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secret");
        std::fs::write(&path, "s3cr3t\r\n").unwrap();
        let file = ValueSource::from_json(&serde_json::json!({ "file": path })).unwrap();
        assert_eq!(file.read().unwrap(), "s3cr3t");

        // PATH is set in every test environment.
        let env = ValueSource::from_json(&serde_json::json!({ "env": "PATH" })).unwrap();
        assert_eq!(env.read().unwrap(), std::env::var("PATH").unwrap());
        let unset = ValueSource::Env("DIAGMON_TEST_SURELY_UNSET_VARIABLE".into());
        assert!(unset.read().unwrap_err().to_string().contains("not set"));
        let missing = ValueSource::File(dir.path().join("absent"));
        assert!(missing.read().unwrap_err().to_string().contains("absent"));

        for inline in [
            serde_json::json!("text"),
            serde_json::json!({ "env": "A", "file": "/b" }),
            serde_json::json!({ "env": 1 }),
            serde_json::json!({ "other": "x" }),
        ] {
            assert_eq!(ValueSource::from_json(&inline), None, "{inline}");
        }
    }
}
