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

use diagmon_name_template::{self as name_template, Fields, Shape};
use std::cell::{Cell, RefCell};

use wasip2::filesystem::preopens::get_directories;
use wasip2::filesystem::types::{
    Descriptor, DescriptorFlags, DescriptorType, ErrorCode, OpenFlags, PathFlags,
};

wit_bindgen::generate!({
    path: "../../wit",
    world: "egress-provider",
});

use diagmon::egress::log::{Level, log};
use diagmon::egress::types::{Artifact, EgressResult, Error};
use exports::diagmon::egress::provider::{Guest, GuestUpload, Upload};

/// The settings, as `configure` validated them.
struct Settings {
    name_template: String,
    overwrite: bool,
    sync: bool,
}

thread_local! {
    static SETTINGS: RefCell<Option<Settings>> = const { RefCell::new(None) };
}

/// The granted directory: the first (and only expected) preopen.
fn granted_directory() -> Result<(Descriptor, String), Error> {
    let mut directories = get_directories();
    if directories.is_empty() {
        return Err(Error::InvalidSettings(
            "no directory is granted to this provider; set `directory` in its [egress.providers.<name>] table".to_owned(),
        ));
    }
    Ok(directories.swap_remove(0))
}

fn io_error(what: &str, path: &str, code: ErrorCode) -> Error {
    match code {
        ErrorCode::Access | ErrorCode::NotPermitted | ErrorCode::ReadOnly => {
            Error::Denied(format!("{what} {path}: {}", code.message()))
        }
        ErrorCode::InsufficientSpace | ErrorCode::Quota => {
            Error::Unavailable(format!("{what} {path}: {}", code.message()))
        }
        _ => Error::Io(format!("{what} {path}: {}", code.message())),
    }
}

fn parse_bool(key: &str, value: &str) -> Result<bool, Error> {
    match value {
        "true" => Ok(true),
        "false" => Ok(false),
        _ => Err(Error::InvalidSettings(format!(
            "`{key}` must be true or false, not `{value}`"
        ))),
    }
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
        let mut parsed = Settings {
            name_template: "{file_name}".to_owned(),
            overwrite: false,
            sync: false,
        };
        for (key, value) in settings {
            match key.as_str() {
                "name_template" => {
                    name_template::check(&value, Shape::FileName)
                        .map_err(Error::InvalidSettings)?;
                    parsed.name_template = value;
                }
                "overwrite" => parsed.overwrite = parse_bool(&key, &value)?,
                "sync" => parsed.sync = parse_bool(&key, &value)?,
                _ => {
                    return Err(Error::InvalidSettings(format!(
                        "unknown setting `{key}`; the filesystem provider knows `name_template`, `overwrite` and `sync`"
                    )));
                }
            }
        }
        let (directory, path) = granted_directory()?;
        match directory.get_type() {
            Ok(DescriptorType::Directory) => {}
            Ok(_) => {
                return Err(Error::InvalidSettings(format!(
                    "the granted path {path} is not a directory"
                )));
            }
            Err(code) => return Err(io_error("cannot inspect", &path, code)),
        }
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
        let (directory, directory_path) = granted_directory()?;
        let name = name_template::render(&template, &name_fields(&artifact), Shape::FileName)
            .map_err(Error::InvalidSettings)?;
        let final_path = join(&directory_path, &name);
        if !overwrite && directory.stat_at(PathFlags::empty(), &name).is_ok() {
            return Err(Error::Denied(format!(
                "{final_path} already exists; remove it, change `name_template`, or set `overwrite = true`"
            )));
        }
        let temporary = format!(
            ".{name}.{}.partial",
            name_template::sanitize(&artifact.operation_id)
        );
        let file = directory
            .open_at(
                PathFlags::empty(),
                &temporary,
                OpenFlags::CREATE | OpenFlags::EXCLUSIVE,
                DescriptorFlags::WRITE,
            )
            .map_err(|code| io_error("cannot create", &join(&directory_path, &temporary), code))?;
        log(
            Level::Debug,
            &format!(
                "writing {} to {}",
                artifact.kind,
                join(&directory_path, &temporary)
            ),
        );
        Ok(Upload::new(FileUpload {
            directory,
            directory_path,
            temporary,
            name,
            file: RefCell::new(Some(file)),
            offset: Cell::new(0),
            sync,
            overwrite,
            done: Cell::new(false),
        }))
    }
}

fn join(directory: &str, name: &str) -> String {
    if directory.ends_with('/') {
        format!("{directory}{name}")
    } else {
        format!("{directory}/{name}")
    }
}

/// One artifact being written to its temporary file.
struct FileUpload {
    directory: Descriptor,
    directory_path: String,
    temporary: String,
    name: String,
    file: RefCell<Option<Descriptor>>,
    offset: Cell<u64>,
    sync: bool,
    /// Replace an existing file of the final name.
    overwrite: bool,
    /// Set once the temporary file was renamed or removed; `Drop` removes it otherwise.
    done: Cell<bool>,
}

impl GuestUpload for FileUpload {
    fn write(&self, chunk: Vec<u8>) -> Result<(), Error> {
        let file = self.file.borrow();
        let Some(file) = file.as_ref() else {
            return Err(Error::Other("the upload is closed".to_owned()));
        };
        let mut written = 0;
        while written < chunk.len() {
            let n = file
                .write(&chunk[written..], self.offset.get())
                .map_err(|code| {
                    io_error(
                        "cannot write",
                        &join(&self.directory_path, &self.temporary),
                        code,
                    )
                })?;
            if n == 0 {
                return Err(Error::Io(format!(
                    "cannot write {}: the file accepted no bytes",
                    join(&self.directory_path, &self.temporary)
                )));
            }
            written += n as usize;
            self.offset.set(self.offset.get() + n);
        }
        Ok(())
    }

    fn finish(this: Upload) -> Result<EgressResult, Error> {
        let upload: FileUpload = this.into_inner();
        let temporary_path = join(&upload.directory_path, &upload.temporary);
        if let Some(file) = upload.file.borrow_mut().take()
            && upload.sync
        {
            file.sync_data()
                .map_err(|code| io_error("cannot flush", &temporary_path, code))?;
        }
        let final_path = join(&upload.directory_path, &upload.name);
        if upload.overwrite {
            upload
                .directory
                .rename_at(&upload.temporary, &upload.directory, &upload.name)
                .map_err(|code| io_error("cannot rename to", &final_path, code))?;
            upload.done.set(true);
        } else {
            // A link fails when the name exists: the check and the commit are one step.
            match upload.directory.link_at(
                PathFlags::empty(),
                &upload.temporary,
                &upload.directory,
                &upload.name,
            ) {
                Ok(()) => {}
                Err(ErrorCode::Exist) => {
                    return Err(Error::Denied(format!(
                        "{final_path} already exists (another upload took the name first); \
                         change `name_template`, or set `overwrite = true`"
                    )));
                }
                Err(code) => return Err(io_error("cannot link to", &final_path, code)),
            }
            // The artifact is complete under its final name; the temporary name goes.
            if let Err(error) = upload.remove_temporary() {
                log(Level::Warn, &format!("{error:?}"));
            }
        }
        log(
            Level::Info,
            &format!("stored {} bytes in {final_path}", upload.offset.get()),
        );
        Ok(EgressResult {
            location: final_path,
        })
    }

    fn abort(this: Upload) -> Result<(), Error> {
        let upload: FileUpload = this.into_inner();
        upload.remove_temporary()
    }
}

impl FileUpload {
    /// Closes and removes the temporary file, once.
    fn remove_temporary(&self) -> Result<(), Error> {
        if self.done.replace(true) {
            return Ok(());
        }
        // Close the file before removing it.
        self.file.borrow_mut().take();
        let path = join(&self.directory_path, &self.temporary);
        self.directory
            .unlink_file_at(&self.temporary)
            .map_err(|code| io_error("cannot remove", &path, code))?;
        log(Level::Debug, &format!("removed {path}"));
        Ok(())
    }
}

impl Drop for FileUpload {
    /// The instance went away without `finish` or `abort`: clean up all the same.
    fn drop(&mut self) {
        if let Err(error) = self.remove_temporary() {
            log(Level::Warn, &format!("{error:?}"));
        }
    }
}

export!(Component);
