//! `configure`'s settings: take each key the provider knows, then [`Settings::finish`] refuses
//! whatever is left with `invalid-settings`, naming the key and the keys the provider knows.
//!
//! ```ignore
//! let mut settings = Settings::new("the gzip provider", pairs);
//! let level = settings.u64("level")?.unwrap_or(6);
//! let overwrite = settings.bool("overwrite")?.unwrap_or(false);
//! settings.finish()?;
//! ```

use crate::Error;

/// The settings `configure` received, being taken key by key.
#[derive(Debug)]
pub struct Settings {
    provider: String,
    pairs: Vec<(String, String)>,
    known: Vec<String>,
}

impl Settings {
    /// The pairs `configure` received, for the provider called `provider` in messages (`the
    /// gzip provider`).
    pub fn new(provider: impl Into<String>, pairs: Vec<(String, String)>) -> Settings {
        Settings {
            provider: provider.into(),
            pairs,
            known: Vec::new(),
        }
    }

    /// The value of `key` as given (a string as is; any other value as its JSON text), if set.
    pub fn string(&mut self, key: &str) -> Option<String> {
        self.known.push(key.to_owned());
        let at = self.pairs.iter().position(|(k, _)| k == key)?;
        Some(self.pairs.remove(at).1)
    }

    /// The value of `key`, required.
    pub fn required(&mut self, key: &str) -> Result<String, Error> {
        self.string(key).ok_or_else(|| {
            Error::InvalidSettings(format!(
                "`{key}` is required by {}; set it in the provider's settings table",
                self.provider
            ))
        })
    }

    /// `key` as `true` or `false`, if set.
    pub fn bool(&mut self, key: &str) -> Result<Option<bool>, Error> {
        match self.string(key).as_deref() {
            None => Ok(None),
            Some("true") => Ok(Some(true)),
            Some("false") => Ok(Some(false)),
            Some(other) => Err(Error::InvalidSettings(format!(
                "`{key}` must be true or false, not `{other}`"
            ))),
        }
    }

    /// `key` as a whole number in `range`, if set.
    pub fn u64(
        &mut self,
        key: &str,
        range: std::ops::RangeInclusive<u64>,
    ) -> Result<Option<u64>, Error> {
        let Some(value) = self.string(key) else {
            return Ok(None);
        };
        match value.trim().parse::<u64>() {
            Ok(n) if range.contains(&n) => Ok(Some(n)),
            _ => Err(Error::InvalidSettings(format!(
                "`{key}` must be a whole number from {} to {}, not `{value}`",
                range.start(),
                range.end()
            ))),
        }
    }

    /// Refuses any key not taken, naming it and the keys the provider knows.
    pub fn finish(self) -> Result<(), Error> {
        let Some((key, _)) = self.pairs.first() else {
            return Ok(());
        };
        let known = match self.known.as_slice() {
            [] => "no settings".to_owned(),
            keys => keys
                .iter()
                .map(|k| format!("`{k}`"))
                .collect::<Vec<_>>()
                .join(", "),
        };
        Err(Error::InvalidSettings(format!(
            "unknown setting `{key}`; {} knows {known}",
            self.provider
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn text(error: Error) -> String {
        crate::errors::message(&error).to_owned()
    }

    #[test]
    fn known_keys_are_taken_and_an_unknown_one_is_named() {
        let mut settings = Settings::new(
            "the test provider",
            pairs(&[("level", "9"), ("overwrite", "true"), ("levle", "1")]),
        );
        assert_eq!(settings.u64("level", 0..=9).unwrap(), Some(9));
        assert_eq!(settings.bool("overwrite").unwrap(), Some(true));
        assert_eq!(settings.bool("sync").unwrap(), None);
        assert_eq!(
            text(settings.finish().unwrap_err()),
            "unknown setting `levle`; the test provider knows `level`, `overwrite`, `sync`"
        );
    }

    #[test]
    fn bad_values_name_the_key_and_what_is_accepted() {
        let mut settings = Settings::new("p", pairs(&[("level", "12"), ("sync", "yes")]));
        assert_eq!(
            text(settings.u64("level", 0..=9).unwrap_err()),
            "`level` must be a whole number from 0 to 9, not `12`"
        );
        assert_eq!(
            text(settings.bool("sync").unwrap_err()),
            "`sync` must be true or false, not `yes`"
        );
        assert_eq!(
            text(settings.required("url").unwrap_err()),
            "`url` is required by p; set it in the provider's settings table"
        );
    }
}
