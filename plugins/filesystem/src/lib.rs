//! diagmon's built-in filesystem egress provider: stores each artifact as a file in the one
//! directory its configuration grants.
//!
//! - The bytes go to a hidden temporary file, `.{name}.{operation-id}.partial` (diagmon's naming
//!   for partial files: the host removes them when it stops an instance, and at start-up), and
//!   `finish` gives the file its final name: a partial artifact never appears under its final
//!   name.
//! - Without `overwrite`, `finish` hard-links the file to its final name, which fails when that
//!   name exists, then removes the temporary name: of two uploads racing for one name exactly one
//!   wins, and nothing is replaced. With `overwrite`, it renames the file over any old one.
//! - An upload dropped unfinished (an abort) removes its temporary file.
//! - Writes are `wasi:filesystem` `descriptor.write` calls at explicit offsets: one `pwrite` per
//!   chunk on the host, about twice as fast as `std::fs`, whose wasip2 streams cap each write at
//!   64 KiB.
//! - The file handling is the guest SDK's (`plugins/sdk`: `PartialFile`, `GrantedDirectory`,
//!   settings and error messages), shared with the examples.
//! - The result's location is the host path: diagmon preopens the granted directory under its host
//!   path, so the path the guest sees is the path on the host.
//!
//! Settings (all optional):
//! - `name_template`: the file name, with placeholders `{file_name}` (the suggested name, as
//!   dotnet-monitor names the artifact's kind: `{yyyyMMdd_HHmmss_fff}_{pid}.nettrace` for a
//!   trace, `core_{yyyyMMdd_HHmmss_fff}` for a dump, `..._{pid}.gcdump`, `..._{pid}.metrics.json`,
//!   `..._{pid}.txt` for logs), `{pid}`, `{uid}`, `{process_name}`, `{operation_id}`, `{kind}`
//!   (`trace`, `dump`, `gcdump`, `metrics`, `logs`), `{timestamp}` (`yyyyMMdd_HHmmss_fff`, UTC),
//!   `{date}` (`yyyy-MM-dd`). Default `{file_name}`.
//! - `overwrite`: `true` to replace an existing file of the same name; default `false` (refused).
//! - `sync`: `true` to flush the file to disk (`fdatasync`) before renaming it; default `false`.

use diagmon_egress_sdk::fs::{GrantedDirectory, PartialFile};
use diagmon_egress_sdk::settings::Settings as SettingsParser;
use diagmon_egress_sdk::{Artifact, EgressResult, Error, Guest, GuestUpload, Level, Upload, log};
use diagmon_name_template::{self as name_template, Fields, Shape};
use std::cell::RefCell;

/// The settings, as `configure` validated them.
struct Settings {
    name_template: String,
    overwrite: bool,
    sync: bool,
}

thread_local! {
    static SETTINGS: RefCell<Option<Settings>> = const { RefCell::new(None) };
}

/// What the name template's placeholders stand for.
fn name_fields(artifact: &Artifact) -> Fields<'_> {
    Fields {
        file_name: &artifact.file_name,
        pid: artifact.pid,
        uid: &artifact.uid,
        process_name: &artifact.process_name,
        operation_id: &artifact.operation_id,
        kind: &artifact.kind,
        started_at_seconds: artifact.started_at.seconds,
        started_at_nanoseconds: artifact.started_at.nanoseconds,
    }
}

struct Component;

impl Guest for Component {
    type Upload = FileUpload;

    fn configure(settings: Vec<(String, String)>) -> Result<(), Error> {
        let mut settings = SettingsParser::new("the filesystem provider", settings);
        let name_template = settings
            .string("name_template")
            .unwrap_or_else(|| "{file_name}".to_owned());
        name_template::check(&name_template, Shape::FileName).map_err(Error::InvalidSettings)?;
        let parsed = Settings {
            name_template,
            overwrite: settings.bool("overwrite")?.unwrap_or(false),
            sync: settings.bool("sync")?.unwrap_or(false),
        };
        settings.finish()?;
        GrantedDirectory::get()?;
        SETTINGS.with(|s| *s.borrow_mut() = Some(parsed));
        Ok(())
    }

    fn begin(artifact: Artifact) -> Result<Upload, Error> {
        let (template, overwrite, sync) = SETTINGS.with(|s| {
            s.borrow()
                .as_ref()
                .map(|s| (s.name_template.clone(), s.overwrite, s.sync))
                .ok_or_else(|| Error::Other("begin was called before configure".to_owned()))
        })?;
        let directory = GrantedDirectory::get()?;
        let name = name_template::render(&template, &name_fields(&artifact), Shape::FileName)
            .map_err(Error::InvalidSettings)?;
        if !overwrite && directory.exists(&name) {
            return Err(Error::Denied(format!(
                "{} already exists; remove it, change `name_template`, or set `overwrite = true`",
                directory.join(&name)
            )));
        }
        let file = PartialFile::create_in(directory, &name, &artifact.operation_id)?;
        Ok(Upload::new(FileUpload {
            file,
            sync,
            overwrite,
        }))
    }
}

/// One artifact being written to its partial file.
struct FileUpload {
    file: PartialFile,
    sync: bool,
    /// Replace an existing file of the final name.
    overwrite: bool,
}

impl GuestUpload for FileUpload {
    fn write(&self, chunk: Vec<u8>) -> Result<(), Error> {
        self.file.write_all(&chunk)
    }

    fn finish(this: Upload) -> Result<EgressResult, Error> {
        let upload: FileUpload = this.into_inner();
        let size = upload.file.len();
        let location = upload
            .file
            .commit(upload.overwrite, upload.sync)
            .map_err(|error| match error {
                Error::Denied(message) => Error::Denied(format!(
                    "{message} (change `name_template`, or set `overwrite = true`)"
                )),
                other => other,
            })?;
        log(Level::Info, &format!("stored {size} bytes in {location}"));
        Ok(EgressResult { location })
    }

    fn abort(this: Upload) -> Result<(), Error> {
        let upload: FileUpload = this.into_inner();
        upload.file.abort()
    }
}

diagmon_egress_sdk::export_provider!(Component);
