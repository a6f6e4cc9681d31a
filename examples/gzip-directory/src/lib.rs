//! An example egress provider: gzips each artifact into the directory its configuration grants,
//! as `{file_name}.gz`, with diagmon's guest SDK (`plugins/sdk`).
//!
//! Build it with (from `examples/`):
//!
//!     cargo build --release --target wasm32-wasip2
//!
//! and configure it in diagmon:
//!
//! ```toml
//! [egress.providers.compressed]
//! component = "examples/target/wasm32-wasip2/release/gzip_directory_provider.wasm"
//! directory = "/var/lib/diagmon/traces"   # the grant: this directory and nothing else
//! [egress.providers.compressed.settings]
//! level = 6                               # optional: 0 (store) to 9 (smallest); default 6
//! overwrite = false                       # optional: replace an existing file of the name
//! ```
//!
//! What the SDK does here: finds the granted directory (`wasi:filesystem/preopens`; `std::fs`
//! with a relative path would fail, the guest's working directory being `/`), writes the
//! compressed bytes to diagmon's partial-file name `.{name}.{operation-id}.partial`, commits it
//! to its final name on `finish` (refusing to replace a file unless `overwrite`), removes it on
//! `abort` or when the upload is dropped, parses the settings with errors naming the key, and
//! turns WASI errors into readable messages.

use std::cell::RefCell;
use std::io::Write;

use diagmon_egress_sdk::errors;
use diagmon_egress_sdk::fs::{GrantedDirectory, PartialFile};
use diagmon_egress_sdk::settings::Settings;
use diagmon_egress_sdk::{Artifact, EgressResult, Error, Guest, GuestUpload, Level, Upload, log};
use flate2::Compression;
use flate2::write::GzEncoder;

thread_local! {
    // The settings `configure` accepted: (compression level, overwrite).
    static SETTINGS: RefCell<(u32, bool)> = const { RefCell::new((6, false)) };
}

struct Component;

impl Guest for Component {
    type Upload = GzipUpload;

    fn configure(settings: Vec<(String, String)>) -> Result<(), Error> {
        let mut settings = Settings::new("the gzip provider", settings);
        let level = settings.u64("level", 0..=9)?.unwrap_or(6);
        let overwrite = settings.bool("overwrite")?.unwrap_or(false);
        settings.finish()?;
        // Check the grant now, so that a provider without one stops diagmon at start-up.
        GrantedDirectory::get()?;
        SETTINGS.with(|s| *s.borrow_mut() = (level as u32, overwrite));
        Ok(())
    }

    fn begin(artifact: Artifact) -> Result<Upload, Error> {
        let (level, overwrite) = SETTINGS.with(|s| *s.borrow());
        let directory = GrantedDirectory::get()?;
        let name = format!("{}.gz", artifact.file_name);
        if !overwrite && directory.exists(&name) {
            return Err(Error::Denied(format!(
                "{} already exists; remove it or set `overwrite = true`",
                directory.join(&name)
            )));
        }
        let file = PartialFile::create_in(directory, &name, &artifact.operation_id)?;
        Ok(Upload::new(GzipUpload {
            encoder: RefCell::new(Some(GzEncoder::new(file, Compression::new(level)))),
            overwrite,
            read: RefCell::new(0),
        }))
    }
}

/// One artifact being compressed into its partial file.
struct GzipUpload {
    /// None once finished.
    encoder: RefCell<Option<GzEncoder<PartialFile>>>,
    overwrite: bool,
    /// Uncompressed bytes received.
    read: RefCell<u64>,
}

impl GuestUpload for GzipUpload {
    fn write(&self, chunk: Vec<u8>) -> Result<(), Error> {
        let mut encoder = self.encoder.borrow_mut();
        let encoder = encoder
            .as_mut()
            .ok_or_else(|| Error::Other("the upload is finished".to_owned()))?;
        encoder
            .write_all(&chunk)
            .map_err(|e| errors::from_io("cannot write the compressed artifact", &e))?;
        *self.read.borrow_mut() += chunk.len() as u64;
        Ok(())
    }

    fn finish(this: Upload) -> Result<EgressResult, Error> {
        let upload: GzipUpload = this.into_inner();
        let encoder = upload
            .encoder
            .borrow_mut()
            .take()
            .ok_or_else(|| Error::Other("the upload is finished".to_owned()))?;
        // The gzip trailer (CRC and size), then the file back from the encoder.
        let file = encoder
            .finish()
            .map_err(|e| errors::from_io("cannot end the compressed artifact", &e))?;
        let compressed = file.len();
        let location = file.commit(upload.overwrite, false)?;
        log(
            Level::Info,
            &format!(
                "stored {} bytes as {compressed} gzipped bytes in {location}",
                upload.read.borrow()
            ),
        );
        Ok(EgressResult { location })
    }

    fn abort(this: Upload) -> Result<(), Error> {
        let upload: GzipUpload = this.into_inner();
        match upload.encoder.borrow_mut().take() {
            // End the stream and remove the partial file, trailer and all.
            Some(encoder) => match encoder.finish() {
                Ok(file) => file.abort(),
                // The trailer failed to write: the file is removed when the encoder drops it.
                Err(_) => Ok(()),
            },
            None => Ok(()),
        }
    }
}

diagmon_egress_sdk::export_provider!(Component);
