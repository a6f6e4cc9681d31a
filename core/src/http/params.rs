//! Query parameters: names compared case-insensitively, values checked with errors that name the
//! parameter.

use std::collections::BTreeSet;

use utoipa::IntoParams;
use uuid::Uuid;

use super::problem::Validation;
use crate::operations::Destination;
use crate::processes::ProcessSelector;

/// The decoded query string.
#[derive(Debug, Default)]
pub struct QueryParams {
    pairs: Vec<(String, String)>,
}

impl QueryParams {
    /// Decodes a raw query string.
    pub fn parse(raw: Option<&str>) -> Self {
        QueryParams {
            pairs: form_urlencoded::parse(raw.unwrap_or_default().as_bytes())
                .into_owned()
                .collect(),
        }
    }

    /// The value of `name` (the last one if repeated), compared case-insensitively.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.pairs
            .iter()
            .rev()
            .find(|(key, _)| key.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_str())
    }

    /// `pid`, `uid` and `name`.
    pub fn process_selector(&self, validation: &mut Validation) -> ProcessSelector {
        let pid = self.get("pid").and_then(|text| match text.parse::<u64>() {
            Ok(pid) => Some(pid),
            Err(_) => {
                validation.error("pid", format!("`{text}` is not a process id"));
                None
            }
        });
        let uid = self.get("uid").and_then(|text| match text.parse::<Uuid>() {
            Ok(uid) => Some(uid),
            Err(_) => {
                validation.error("uid", format!("`{text}` is not a GUID"));
                None
            }
        });
        let name = self.get("name").map(str::to_owned);
        ProcessSelector { pid, uid, name }
    }

    /// `egressProvider`: the provider the artifact goes to; absent or empty, the response.
    pub fn destination(&self) -> Destination {
        match self.get("egressProvider").filter(|name| !name.is_empty()) {
            Some(provider) => Destination::Egress(provider.to_owned()),
            None => Destination::Stream,
        }
    }

    /// `tags`: comma-separated, empties dropped.
    pub fn tags(&self) -> BTreeSet<String> {
        self.get("tags")
            .unwrap_or_default()
            .split(',')
            .map(str::trim)
            .filter(|tag| !tag.is_empty())
            .map(str::to_owned)
            .collect()
    }

    /// `durationSeconds`: default 30, -1 = until stopped (`None`), below -1 is an error.
    pub fn duration(&self, validation: &mut Validation) -> Option<std::time::Duration> {
        let Some(text) = self.get("durationSeconds") else {
            return Some(std::time::Duration::from_secs(30));
        };
        match text.parse::<i64>() {
            Ok(-1) => None,
            Ok(seconds) if (0..=i64::from(i32::MAX)).contains(&seconds) => {
                Some(std::time::Duration::from_secs(seconds as u64))
            }
            Ok(_) => {
                validation.error(
                    "durationSeconds",
                    format!("{text} is out of range: use -1 (until stopped) or 0 to 2147483647"),
                );
                None
            }
            Err(_) => {
                validation.error(
                    "durationSeconds",
                    format!("`{text}` is not a whole number of seconds"),
                );
                None
            }
        }
    }

    /// A boolean flag (`true`/`false`, case-insensitive), default false.
    pub fn flag(&self, name: &str, validation: &mut Validation) -> bool {
        match self.get(name) {
            None => false,
            Some(text) if text.eq_ignore_ascii_case("true") => true,
            Some(text) if text.eq_ignore_ascii_case("false") => false,
            Some(text) => {
                validation.error(name, format!("`{text}` is not true or false"));
                false
            }
        }
    }
}

// The OpenAPI description of the query parameters the methods above parse; each route lists the
// ones it takes in its `params(...)`.

/// `pid`, `uid` and `name` ([`QueryParams::process_selector`]).
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)] // Describes the query the handlers parse by hand.
pub struct ProcessQuery {
    /// Process id.
    pid: Option<u64>,
    /// Runtime instance uid.
    uid: Option<Uuid>,
    /// Process name (case-insensitive).
    name: Option<String>,
}

/// `durationSeconds` ([`QueryParams::duration`]).
#[derive(IntoParams)]
#[into_params(parameter_in = Query, rename_all = "camelCase")]
#[allow(dead_code)] // Describes the query the handlers parse by hand.
pub struct DurationQuery {
    /// Seconds to collect: default 30; -1 = until stopped.
    duration_seconds: Option<i64>,
}

/// `egressProvider` and `tags` ([`QueryParams::destination`], [`QueryParams::tags`]).
#[derive(IntoParams)]
#[into_params(parameter_in = Query, rename_all = "camelCase")]
#[allow(dead_code)] // Describes the query the handlers parse by hand.
pub struct DestinationQuery {
    /// Send the artifact to this egress provider (202 and a Location) instead of the response
    /// (200).
    egress_provider: Option<String>,
    /// Comma-separated labels for the operation.
    tags: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_case_insensitive_and_values_checked() {
        let params = QueryParams::parse(Some("PID=12&durationseconds=-1&tags=a,,b%20,&uid=zz"));
        let mut validation = Validation::default();
        let selector = params.process_selector(&mut validation);
        assert_eq!(selector.pid, Some(12));
        assert_eq!(params.duration(&mut validation), None);
        assert_eq!(params.tags(), BTreeSet::from(["a".into(), "b".into()]));
        let problem = validation.finish(()).unwrap_err();
        let body = serde_json::to_value(&problem).unwrap();
        assert!(body["errors"]["uid"][0].as_str().unwrap().contains("GUID"));
    }

    #[test]
    fn durations_below_minus_one_are_rejected() {
        for bad in ["-2", "abc", "99999999999"] {
            let params = QueryParams::parse(Some(&format!("durationSeconds={bad}")));
            let mut validation = Validation::default();
            params.duration(&mut validation);
            assert!(validation.finish(()).is_err(), "{bad}");
        }
    }
}
