//! Files in the directory the operator granted.
//!
//! A provider sees the host directory of its `directory` grant under its host path, through
//! `wasi:filesystem/preopens`, and nothing else. Its working directory is `/`, so `std::fs`
//! with a relative path (or `..`) fails with "No such file or directory (os error 44)": find
//! the directory with [`GrantedDirectory::get`] and name files inside it.
//!
//! [`PartialFile`] is the writer a provider wants for an artifact: it writes under diagmon's
//! partial-file name (`.{name}.{operation-id}.partial`, which diagmon removes when an instance
//! dies and at start-up), each write one `pwrite` on the host (`std::fs` on wasip2 cuts writes
//! into 64 KiB pieces), and [`PartialFile::commit`] gives it its final name in one step;
//! [`PartialFile::abort`], or dropping it, removes it.

use std::cell::{Cell, RefCell};

use wasip2::filesystem::preopens::get_directories;
use wasip2::filesystem::types::{
    Descriptor, DescriptorFlags, DescriptorType, ErrorCode, OpenFlags, PathFlags,
};

use crate::errors;
use crate::{Error, Level, log};

/// The granted directory: its descriptor and its path (the host path).
#[derive(Debug)]
pub struct GrantedDirectory {
    descriptor: Descriptor,
    path: String,
}

impl GrantedDirectory {
    /// The directory the provider's configuration grants (the first preopen); `invalid-settings`
    /// saying how to grant one when there is none, or when the grant is not a directory.
    pub fn get() -> Result<GrantedDirectory, Error> {
        let mut directories = get_directories();
        if directories.is_empty() {
            return Err(Error::InvalidSettings(
                "no directory is granted to this provider; set `directory` in its \
                 [egress.providers.<name>] table"
                    .to_owned(),
            ));
        }
        let (descriptor, path) = directories.swap_remove(0);
        match descriptor.get_type() {
            Ok(DescriptorType::Directory) => Ok(GrantedDirectory { descriptor, path }),
            Ok(_) => Err(Error::InvalidSettings(format!(
                "the granted path {path} is not a directory"
            ))),
            Err(code) => Err(errors::filesystem("cannot inspect", &path, code)),
        }
    }

    /// The directory's path, as the host names it.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// The WASI descriptor, for what this module does not cover.
    pub fn descriptor(&self) -> &Descriptor {
        &self.descriptor
    }

    /// The host path of `name` inside the directory.
    pub fn join(&self, name: &str) -> String {
        if self.path.ends_with('/') {
            format!("{}{name}", self.path)
        } else {
            format!("{}/{name}", self.path)
        }
    }

    /// True when something named `name` exists in the directory.
    pub fn exists(&self, name: &str) -> bool {
        self.descriptor.stat_at(PathFlags::empty(), name).is_ok()
    }

    /// Writes a small file whole, replacing any of that name (a sidecar, an index).
    pub fn write_file(&self, name: &str, data: &[u8]) -> Result<(), Error> {
        let path = self.join(name);
        let file = self
            .descriptor
            .open_at(
                PathFlags::empty(),
                name,
                OpenFlags::CREATE | OpenFlags::TRUNCATE,
                DescriptorFlags::WRITE,
            )
            .map_err(|code| errors::filesystem("cannot create", &path, code))?;
        write_at(&file, data, 0, &path).map(|_| ())
    }
}

/// Writes all of `data` at `offset`; returns the offset after it.
fn write_at(file: &Descriptor, data: &[u8], mut offset: u64, path: &str) -> Result<u64, Error> {
    let mut written = 0;
    while written < data.len() {
        let n = file
            .write(&data[written..], offset)
            .map_err(|code| errors::filesystem("cannot write", path, code))?;
        if n == 0 {
            return Err(Error::Io(format!(
                "cannot write {path}: the file accepted no bytes"
            )));
        }
        written += n as usize;
        offset += n;
    }
    Ok(offset)
}

/// Keeps the characters of an operation id that are safe in a file name.
fn sanitize(text: &str) -> String {
    text.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// An artifact being written under a partial name in the granted directory, until
/// [`PartialFile::commit`] gives it its final name. Dropped uncommitted, it removes itself.
#[derive(Debug)]
pub struct PartialFile {
    directory: GrantedDirectory,
    name: String,
    temporary: String,
    file: RefCell<Option<Descriptor>>,
    offset: Cell<u64>,
    /// Set once the partial file was renamed or removed.
    done: Cell<bool>,
}

impl PartialFile {
    /// Creates `.{name}.{operation_id}.partial` in the granted directory, for an artifact to
    /// be named `name` (a plain file name, no `/`). `denied` when a file named `name` exists
    /// already (pass `overwrite` to [`PartialFile::commit`] to replace it instead, and check
    /// with [`GrantedDirectory::exists`] yourself).
    pub fn create(name: &str, operation_id: &str) -> Result<PartialFile, Error> {
        Self::create_in(GrantedDirectory::get()?, name, operation_id)
    }

    /// [`PartialFile::create`] in a directory already looked up.
    pub fn create_in(
        directory: GrantedDirectory,
        name: &str,
        operation_id: &str,
    ) -> Result<PartialFile, Error> {
        if name.is_empty() || name.contains('/') || name == "." || name == ".." {
            return Err(Error::InvalidSettings(format!(
                "`{name}` is not a file name: it must be one path segment, without `/`"
            )));
        }
        let temporary = format!(".{name}.{}.partial", sanitize(operation_id));
        let file = directory
            .descriptor
            .open_at(
                PathFlags::empty(),
                &temporary,
                OpenFlags::CREATE | OpenFlags::EXCLUSIVE,
                DescriptorFlags::WRITE,
            )
            .map_err(|code| {
                errors::filesystem("cannot create", &directory.join(&temporary), code)
            })?;
        log(
            Level::Debug,
            &format!("writing {}", directory.join(&temporary)),
        );
        Ok(PartialFile {
            directory,
            name: name.to_owned(),
            temporary,
            file: RefCell::new(Some(file)),
            offset: Cell::new(0),
            done: Cell::new(false),
        })
    }

    /// The host path the artifact will have once committed.
    pub fn final_path(&self) -> String {
        self.directory.join(&self.name)
    }

    /// The host path of the partial file.
    pub fn partial_path(&self) -> String {
        self.directory.join(&self.temporary)
    }

    /// Bytes written so far.
    pub fn len(&self) -> u64 {
        self.offset.get()
    }

    /// True before the first byte.
    pub fn is_empty(&self) -> bool {
        self.offset.get() == 0
    }

    /// Appends all of `data` (no short writes).
    pub fn write_all(&self, data: &[u8]) -> Result<(), Error> {
        let file = self.file.borrow();
        let Some(file) = file.as_ref() else {
            return Err(Error::Other(
                "the file is closed (committed or aborted)".to_owned(),
            ));
        };
        let end = write_at(file, data, self.offset.get(), &self.partial_path())?;
        self.offset.set(end);
        Ok(())
    }

    /// Gives the file its final name and returns its host path. With `sync`, flushes it to disk
    /// first. Without `overwrite` the commit fails with `denied` when the name exists (the
    /// check and the commit are one step: of two uploads racing for a name exactly one wins);
    /// with it, an existing file is replaced. On error the partial file is removed.
    pub fn commit(self, overwrite: bool, sync: bool) -> Result<String, Error> {
        let final_path = self.final_path();
        if let Some(file) = self.file.borrow_mut().take()
            && sync
        {
            file.sync_data()
                .map_err(|code| errors::filesystem("cannot flush", &self.partial_path(), code))?;
        }
        let directory = &self.directory.descriptor;
        if overwrite {
            directory
                .rename_at(&self.temporary, directory, &self.name)
                .map_err(|code| errors::filesystem("cannot rename to", &final_path, code))?;
            self.done.set(true);
        } else {
            match directory.link_at(PathFlags::empty(), &self.temporary, directory, &self.name) {
                Ok(()) => {}
                Err(ErrorCode::Exist) => {
                    return Err(Error::Denied(format!(
                        "{final_path} already exists (another upload took the name first); \
                         choose another name, or overwrite it"
                    )));
                }
                Err(code) => {
                    return Err(errors::filesystem("cannot link to", &final_path, code));
                }
            }
            // Complete under its final name; the partial name goes.
            if let Err(error) = self.remove() {
                log(Level::Warn, errors::message(&error));
            }
        }
        Ok(final_path)
    }

    /// Abandons the artifact: closes and removes the partial file.
    pub fn abort(self) -> Result<(), Error> {
        self.remove()
    }

    /// Closes and removes the partial file, once.
    fn remove(&self) -> Result<(), Error> {
        if self.done.replace(true) {
            return Ok(());
        }
        self.file.borrow_mut().take();
        self.directory
            .descriptor
            .unlink_file_at(&self.temporary)
            .map_err(|code| errors::filesystem("cannot remove", &self.partial_path(), code))?;
        log(Level::Debug, &format!("removed {}", self.partial_path()));
        Ok(())
    }
}

impl Drop for PartialFile {
    /// Neither committed nor aborted (a provider whose upload was dropped): clean up all the same.
    fn drop(&mut self) {
        if let Err(error) = self.remove() {
            log(Level::Warn, errors::message(&error));
        }
    }
}

/// Lets an encoder (gzip, zstd, a hasher's tee) write into the partial file, owning it (get it
/// back from the encoder's `finish` to commit it). Errors come back as `std::io::Error`s holding
/// the provider error's message; [`crate::errors::from_io`] turns them back.
impl std::io::Write for PartialFile {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        (&*self).write(buf)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// [`PartialFile`]'s `std::io::Write`, through a shared reference.
impl std::io::Write for &PartialFile {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        PartialFile::write_all(self, buf)
            .map(|()| buf.len())
            .map_err(|error| std::io::Error::other(errors::message(&error).to_owned()))
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
