//! Artifact names from a provider's `name_template` setting, shared by the built-in providers:
//! `{file_name}`, `{pid}`, `{uid}`, `{process_name}`, `{operation_id}`, `{kind}`, `{timestamp}`
//! (`yyyyMMdd_HHmmss_fff`, UTC) and `{date}` (`yyyy-MM-dd`, UTC). Values never bring a `/`, `\`
//! or control character into the name; errors are messages for the operator.

/// The placeholders a template may use.
pub const PLACEHOLDERS: &[&str] = &[
    "file_name",
    "pid",
    "uid",
    "process_name",
    "operation_id",
    "kind",
    "timestamp",
    "date",
];

/// What a name may look like.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// One file name: no `/`.
    FileName,
    /// A relative path: `/`-separated segments, none empty, `.` or `..`.
    RelativePath,
}

/// What the placeholders stand for.
#[derive(Debug, Clone, Copy)]
pub struct Fields<'a> {
    /// The suggested file name.
    pub file_name: &'a str,
    /// The process id.
    pub pid: u64,
    /// The runtime instance uid.
    pub uid: &'a str,
    /// The process name.
    pub process_name: &'a str,
    /// The operation id.
    pub operation_id: &'a str,
    /// The artifact kind: `trace`, `dump`, `gcdump`, `metrics`, `logs`.
    pub kind: &'a str,
    /// Start of the capture: seconds since the Unix epoch.
    pub started_at_seconds: u64,
    /// Start of the capture: nanoseconds within the second.
    pub started_at_nanoseconds: u32,
}

/// Checks a template at configuration time: known placeholders, closed braces, the shape.
pub fn check(template: &str, shape: Shape) -> Result<(), String> {
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        let Some(close) = rest[open..].find('}') else {
            return Err(format!("`name_template` `{template}` has an unclosed `{{`"));
        };
        let name = &rest[open + 1..open + close];
        if !PLACEHOLDERS.contains(&name) {
            return Err(format!(
                "`name_template` uses the unknown placeholder `{{{name}}}`; known: {}",
                PLACEHOLDERS
                    .iter()
                    .map(|p| format!("{{{p}}}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        rest = &rest[open + close + 1..];
    }
    match shape {
        Shape::FileName if template.contains('/') || template.contains('\\') => Err(format!(
            "`name_template` `{template}` must be a file name, without `/`"
        )),
        Shape::RelativePath if !is_relative_path(template) => Err(format!(
            "`name_template` `{template}` must be a relative name: no leading or trailing `/`, no empty, `.` or `..` segment"
        )),
        _ => Ok(()),
    }
}

/// Fills a template in; fails when the result is not a usable name of the shape.
pub fn render(template: &str, fields: &Fields<'_>, shape: Shape) -> Result<String, String> {
    let time = UtcTime::new(fields.started_at_seconds, fields.started_at_nanoseconds);
    let mut name = template.to_owned();
    for (placeholder, value) in [
        ("{file_name}", sanitize(fields.file_name)),
        ("{pid}", fields.pid.to_string()),
        ("{uid}", sanitize(fields.uid)),
        ("{process_name}", sanitize(fields.process_name)),
        ("{operation_id}", sanitize(fields.operation_id)),
        ("{kind}", sanitize(fields.kind)),
        ("{timestamp}", time.compact()),
        ("{date}", time.date()),
    ] {
        name = name.replace(placeholder, &value);
    }
    let usable = match shape {
        Shape::FileName => !(name.is_empty() || name == "." || name == ".."),
        Shape::RelativePath => is_relative_path(&name),
    };
    if usable {
        Ok(name)
    } else {
        Err(format!(
            "`name_template` `{template}` gives the unusable name `{name}`"
        ))
    }
}

fn is_relative_path(path: &str) -> bool {
    !path.is_empty()
        && path
            .split('/')
            .all(|segment| !(segment.is_empty() || segment == "." || segment == ".."))
}

/// Replaces the characters that have no place in a name segment.
pub fn sanitize(value: &str) -> String {
    value
        .chars()
        .map(|c| {
            if c == '/' || c == '\\' || c.is_control() {
                '_'
            } else {
                c
            }
        })
        .collect()
}

/// A UTC date and time, from seconds and nanoseconds since the Unix epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UtcTime {
    year: i64,
    month: i64,
    day: i64,
    hour: u64,
    minute: u64,
    second: u64,
    millisecond: u32,
}

impl UtcTime {
    /// Converts a Unix time (civil-from-days, Howard Hinnant's algorithm).
    pub fn new(seconds: u64, nanoseconds: u32) -> Self {
        let days = (seconds / 86_400) as i64;
        let secs_of_day = seconds % 86_400;
        let z = days + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z - era * 146_097;
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let day = doy - (153 * mp + 2) / 5 + 1;
        let month = if mp < 10 { mp + 3 } else { mp - 9 };
        UtcTime {
            year: yoe + era * 400 + i64::from(month <= 2),
            month,
            day,
            hour: secs_of_day / 3600,
            minute: secs_of_day / 60 % 60,
            second: secs_of_day % 60,
            millisecond: nanoseconds / 1_000_000,
        }
    }

    /// `yyyyMMdd_HHmmss_fff`, as dotnet-monitor stamps artifact names.
    pub fn compact(&self) -> String {
        format!(
            "{:04}{:02}{:02}_{:02}{:02}{:02}_{:03}",
            self.year, self.month, self.day, self.hour, self.minute, self.second, self.millisecond
        )
    }

    /// `yyyy-MM-dd`.
    pub fn date(&self) -> String {
        format!("{:04}-{:02}-{:02}", self.year, self.month, self.day)
    }

    /// `yyyy-MM-ddTHH:mm:ss.fffZ` (ISO 8601).
    pub fn iso8601(&self) -> String {
        format!(
            "{}T{:02}:{:02}:{:02}.{:03}Z",
            self.date(),
            self.hour,
            self.minute,
            self.second,
            self.millisecond
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields() -> Fields<'static> {
        Fields {
            file_name: "20251126_072408_123_42.nettrace",
            pid: 42,
            uid: "u/id",
            process_name: "dotnet",
            operation_id: "op",
            kind: "trace",
            started_at_seconds: 1_764_141_848,
            started_at_nanoseconds: 123_000_000,
        }
    }

    #[test]
    fn times_are_utc() {
        let time = UtcTime::new(1_764_141_848, 123_000_000);
        assert_eq!(time.compact(), "20251126_072408_123");
        assert_eq!(time.iso8601(), "2025-11-26T07:24:08.123Z");
        assert_eq!(UtcTime::new(951_782_400, 0).date(), "2000-02-29");
    }

    #[test]
    fn templates_are_checked_and_filled() {
        assert!(
            check("{pid}-{nope}", Shape::FileName)
                .unwrap_err()
                .contains("{nope}")
        );
        assert!(check("a/{file_name}", Shape::FileName).is_err());
        assert!(check("{date}/{file_name}", Shape::RelativePath).is_ok());
        assert!(check("/abs", Shape::RelativePath).is_err());
        assert_eq!(
            render("{date}/{uid}-{pid}", &fields(), Shape::RelativePath).unwrap(),
            "2025-11-26/u_id-42"
        );
        assert!(
            render(
                "{kind}",
                &Fields {
                    kind: "..",
                    ..fields()
                },
                Shape::FileName
            )
            .is_err()
        );
    }

    #[test]
    fn every_artifact_kind_names_its_file() {
        for (kind, file_name) in [
            ("dump", "core_20251126_072408_123"),
            ("gcdump", "20251126_072408_123_42.gcdump"),
            ("metrics", "20251126_072408_123_42.metrics.json"),
            ("logs", "20251126_072408_123_42.txt"),
        ] {
            let fields = Fields {
                kind,
                file_name,
                ..fields()
            };
            assert_eq!(
                render("{file_name}", &fields, Shape::FileName).unwrap(),
                file_name
            );
            assert_eq!(
                render("{kind}/{date}/{file_name}", &fields, Shape::RelativePath).unwrap(),
                format!("{kind}/2025-11-26/{file_name}")
            );
        }
    }
}
