//! `diagmon plugin new --lang rust|python|js|c NAME`: a starting project for an egress provider,
//! written from files compiled into diagmon (the contract, the Rust guest SDK, the Python,
//! JavaScript and C examples), so that it works without a checkout of diagmon's repository.

use std::path::{Path, PathBuf};

/// The contract every template carries in `wit/` (the current version's folder).
const WIT: &str = include_str!("../../../wit/diagmon-egress@0.1.0/egress.wit");

/// The Rust guest SDK, vendored into a Rust project as `diagmon-egress-sdk/`.
const SDK_FILES: &[(&str, &str)] = &[
    (
        "src/lib.rs",
        include_str!("../../../plugins/sdk/src/lib.rs"),
    ),
    ("src/fs.rs", include_str!("../../../plugins/sdk/src/fs.rs")),
    (
        "src/errors.rs",
        include_str!("../../../plugins/sdk/src/errors.rs"),
    ),
    (
        "src/settings.rs",
        include_str!("../../../plugins/sdk/src/settings.rs"),
    ),
    ("README.md", include_str!("../../../plugins/sdk/README.md")),
];

/// The Python example's sources.
const PYTHON_FILES: &[(&str, &str)] = &[
    (
        "app.py",
        include_str!("../../../examples/python-sidecar/app.py"),
    ),
    (
        "provider.py",
        include_str!("../../../examples/python-sidecar/provider.py"),
    ),
];

/// The JavaScript example's sources: the provider and its pinned toolchain (package-lock.json).
const JS_FILES: &[(&str, &str)] = &[
    (
        "provider.js",
        include_str!("../../../examples/js-object-store/provider.js"),
    ),
    (
        "package.json",
        include_str!("../../../examples/js-object-store/package.json"),
    ),
    (
        "package-lock.json",
        include_str!("../../../examples/js-object-store/package-lock.json"),
    ),
    (
        ".gitignore",
        include_str!("../../../examples/js-object-store/.gitignore"),
    ),
];

/// The C example's sources.
const C_FILES: &[(&str, &str)] = &[
    (
        "provider.c",
        include_str!("../../../examples/c-directory/provider.c"),
    ),
    (
        ".gitignore",
        include_str!("../../../examples/c-directory/.gitignore"),
    ),
];

/// The name the JavaScript example's package files carry, replaced by the project's name.
const JS_PACKAGE_NAME: &str = "diagmon-js-object-store";

/// A template's language.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TemplateLanguage {
    /// Rust on the guest SDK (wasm32-wasip2).
    Rust,
    /// Python with componentize-py.
    Python,
    /// JavaScript with componentize-js.
    JavaScript,
    /// C with clang, wasi-libc and wit-bindgen.
    C,
}

impl std::str::FromStr for TemplateLanguage {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "rust" => Ok(TemplateLanguage::Rust),
            "python" => Ok(TemplateLanguage::Python),
            "js" => Ok(TemplateLanguage::JavaScript),
            "c" => Ok(TemplateLanguage::C),
            other => Err(format!(
                "unknown language `{other}`; use `rust`, `python`, `js` or `c`"
            )),
        }
    }
}

/// Writes a new provider project named after `directory`'s last component into `directory`,
/// which must not exist yet; returns the files written, relative to it.
pub fn write_template(
    directory: &Path,
    language: TemplateLanguage,
) -> Result<Vec<PathBuf>, String> {
    let name = directory
        .file_name()
        .and_then(|n| n.to_str())
        .filter(|n| {
            !n.is_empty()
                && n.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
                && n.starts_with(|c: char| c.is_ascii_alphabetic())
        })
        .ok_or_else(|| {
            format!(
                "`{}` is not a usable project name: use letters, digits, `-` and `_`, starting \
                 with a letter",
                directory.display()
            )
        })?;
    if directory.exists() {
        return Err(format!(
            "{} exists already; choose a new directory",
            directory.display()
        ));
    }
    let files = match language {
        TemplateLanguage::Rust => rust_files(name),
        TemplateLanguage::Python => python_files(name),
        TemplateLanguage::JavaScript => js_files(name),
        TemplateLanguage::C => c_files(name),
    };
    for (relative, content) in &files {
        let path = directory.join(relative);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .map_err(|e| format!("cannot create {}: {e}", parent.display()))?;
        }
        std::fs::write(&path, content)
            .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
        #[cfg(unix)]
        if relative.ends_with(".sh") {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))
                .map_err(|e| format!("cannot make {} executable: {e}", path.display()))?;
        }
    }
    Ok(files.into_iter().map(|(p, _)| PathBuf::from(p)).collect())
}

fn rust_files(name: &str) -> Vec<(String, String)> {
    let library = name.replace('-', "_");
    let mut files = vec![
        (
            "Cargo.toml".to_owned(),
            format!(
                r#"[package]
name = "{name}"
version = "0.1.0"
edition = "2024"

[lib]
crate-type = ["cdylib"]

[dependencies]
diagmon-egress-sdk = {{ path = "diagmon-egress-sdk" }}

[profile.release]
opt-level = "s"
lto = true
codegen-units = 1
# Keep function names: a trap's backtrace then names the function.
strip = "debuginfo"

[workspace]
"#
            ),
        ),
        ("src/lib.rs".to_owned(), RUST_LIB.to_owned()),
        (
            "build.sh".to_owned(),
            format!(
                "#!/bin/sh\n# Builds the provider: target/wasm32-wasip2/release/{library}.wasm, a component.\nset -e\ncd \"$(dirname \"$0\")\"\nrustup target add wasm32-wasip2\ncargo build --release --target wasm32-wasip2\n"
            ),
        ),
        (
            "README.md".to_owned(),
            format!(
                "# {name}\n\nA diagmon egress provider in Rust, on the guest SDK (vendored in \
                 `diagmon-egress-sdk/`).\nIt stores each artifact in the directory its \
                 configuration grants.\n\n    ./build.sh\n    diagmon plugin test \
                 target/wasm32-wasip2/release/{library}.wasm\n\nThen in diagmon's \
                 configuration:\n\n```toml\n[egress.providers.{name}]\ncomponent = \
                 \"/absolute/path/to/target/wasm32-wasip2/release/{library}.wasm\"\ndirectory = \
                 \"/var/lib/diagmon/traces\"\n```\n\n`wit/egress.wit` is the contract; \
                 `src/lib.rs` says what to change.\n"
            ),
        ),
        ("wit/egress.wit".to_owned(), WIT.to_owned()),
        (
            "diagmon-egress-sdk/Cargo.toml".to_owned(),
            r#"[package]
name = "diagmon-egress-sdk"
version = "0.1.0"
edition = "2024"

[dependencies]
wit-bindgen = "0.63.0"
wasip2 = "2.0.1"
"#
            .to_owned(),
        ),
        (
            "diagmon-egress-sdk/wit/egress.wit".to_owned(),
            WIT.to_owned(),
        ),
    ];
    for (relative, content) in SDK_FILES {
        files.push((
            format!("diagmon-egress-sdk/{relative}"),
            (*content).to_owned(),
        ));
    }
    files
}

fn python_files(name: &str) -> Vec<(String, String)> {
    let mut files: Vec<(String, String)> = PYTHON_FILES
        .iter()
        .map(|(p, c)| ((*p).to_owned(), (*c).to_owned()))
        .collect();
    files.push(("wit/egress.wit".to_owned(), WIT.to_owned()));
    let module = name.replace('-', "_");
    files.push((
        "build.sh".to_owned(),
        format!(
            "#!/bin/sh\n# Builds the provider: {module}.wasm, a component (about 18 MB).\nset -e\ncd \"$(dirname \"$0\")\"\n[ -x venv/bin/componentize-py ] || {{ python3 -m venv venv && venv/bin/pip install --quiet componentize-py==0.25.1; }}\nvenv/bin/componentize-py -d wit -w egress-provider componentize app -o {module}.wasm\n"
        ),
    ));
    files.push((
        "README.md".to_owned(),
        format!(
            "# {name}\n\nA diagmon egress provider in Python (componentize-py 0.25): it stores \
             each artifact in a\ndirectory with a JSON sidecar. The Python file API cannot list \
             WASI preopens, so the\ndirectory is both the grant and a setting.\n\n    \
             ./build.sh\n\nThen in diagmon's configuration:\n\n```toml\n[egress.providers.{name}]\n\
             component = \"/absolute/path/to/{module}.wasm\"\ndirectory = \"/var/lib/diagmon/traces\"\n\
             [egress.providers.{name}.settings]\ndirectory = \"/var/lib/diagmon/traces\"\n```\n\n\
             and test it with `diagmon plugin test {module}.wasm --config diagmon.toml`.\n\
             Clean up in `abort`, not in `__del__` (componentize-py runs no destructor for an \
             exported resource).\n"
        ),
    ));
    files
}

fn js_files(name: &str) -> Vec<(String, String)> {
    let module = name.replace('-', "_");
    let package_name = format!("\"name\": \"{JS_PACKAGE_NAME}\"");
    let mut files: Vec<(String, String)> = JS_FILES
        .iter()
        .map(|(p, c)| {
            (
                (*p).to_owned(),
                c.replace(&package_name, &format!("\"name\": \"{name}\"")),
            )
        })
        .collect();
    files.push(("wit/egress.wit".to_owned(), WIT.to_owned()));
    files.push((
        "build.sh".to_owned(),
        include_str!("../../../examples/js-object-store/build.sh")
            .replace("../../wit/diagmon-egress@0.1.0", "wit")
            .replace("js_object_store.wasm", &format!("{module}.wasm")),
    ));
    files.push((
        "README.md".to_owned(),
        format!(
            "# {name}\n\nA diagmon egress provider in JavaScript (componentize-js 0.23, pinned in \
             `package-lock.json`): it\nstores each artifact in the object store its configuration \
             grants, under `{{prefix}}{{file_name}}`.\n\n    ./build.sh        # npm ci on first use, \
             then {module}.wasm (about 12 MB)\n\nThen in diagmon's configuration:\n\n```toml\n\
             [egress.providers.{name}]\ncomponent = \"/absolute/path/to/{module}.wasm\"\n\
             object_store = {{ url = \"s3://bucket/traces\" }}   # or file:///var/lib/diagmon/traces\n\
             [egress.providers.{name}.settings]\nprefix = \"prod/\"   # optional\n```\n\n\
             and test it with `diagmon plugin test {module}.wasm --config diagmon.toml`. diagmon \
             compiles the\n12 MB component once (seconds) and keeps the compiled form in \
             `egress.cache_directory`.\n`provider.js` says what to change; `wit/egress.wit` is \
             the contract.\n"
        ),
    ));
    files
}

fn c_files(name: &str) -> Vec<(String, String)> {
    let module = name.replace('-', "_");
    let mut files: Vec<(String, String)> = C_FILES
        .iter()
        .map(|(p, c)| ((*p).to_owned(), (*c).to_owned()))
        .collect();
    files.push(("wit/egress.wit".to_owned(), WIT.to_owned()));
    files.push((
        "build.sh".to_owned(),
        include_str!("../../../examples/c-directory/build.sh")
            .replace("../../wit/diagmon-egress@0.1.0", "wit")
            .replace("c_directory.wasm", &format!("{module}.wasm")),
    ));
    files.push((
        "README.md".to_owned(),
        format!(
            "# {name}\n\nA diagmon egress provider in C (wit-bindgen 0.63, wasi-libc): it stores each \
             artifact in the\ndirectory its configuration grants, through a partial file renamed \
             at `finish`.\n\nTools (Debian): `apt-get install clang lld wasi-libc \
             libclang-rt-dev-wasm32`, then\n\n    cargo install wit-bindgen-cli --version \
             0.63.0 --locked --no-default-features --features c\n    cargo install wasm-tools \
             --version 1.262.0 --locked --no-default-features --features component\n\n\
             Build and test:\n\n    ./build.sh        # {module}.wasm, about 240 KB\n    \
             diagmon plugin test {module}.wasm\n\nThen in diagmon's configuration:\n\n```toml\n\
             [egress.providers.{name}]\ncomponent = \"/absolute/path/to/{module}.wasm\"\n\
             directory = \"/var/lib/diagmon/traces\"\n```\n\n`provider.c` says what to change; \
             `wit/egress.wit` is the contract.\n"
        ),
    ));
    files
}

/// The Rust template's provider: each artifact into the granted directory, under its suggested
/// name, through the SDK's partial file.
const RUST_LIB: &str = r#"//! An egress provider for diagmon: stores each artifact in the directory its configuration
//! grants (`directory = ...`), under the name diagmon suggests. Change `begin` and the upload to
//! send the bytes elsewhere; `wit/egress.wit` is the contract.

use std::cell::RefCell;

use diagmon_egress_sdk::fs::{GrantedDirectory, PartialFile};
use diagmon_egress_sdk::settings::Settings;
use diagmon_egress_sdk::{Artifact, EgressResult, Error, Guest, GuestUpload, Level, Upload, log};

thread_local! {
    // `overwrite`, as `configure` accepted it (one instance per artifact: nothing else lasts).
    static OVERWRITE: RefCell<bool> = const { RefCell::new(false) };
}

struct Component;

impl Guest for Component {
    type Upload = FileUpload;

    fn configure(settings: Vec<(String, String)>) -> Result<(), Error> {
        let mut settings = Settings::new("this provider", settings);
        let overwrite = settings.bool("overwrite")?.unwrap_or(false);
        // Every key not taken above is refused, naming it.
        settings.finish()?;
        // A missing grant stops diagmon at start-up rather than failing the first artifact.
        GrantedDirectory::get()?;
        OVERWRITE.with(|o| *o.borrow_mut() = overwrite);
        Ok(())
    }

    fn begin(artifact: Artifact) -> Result<Upload, Error> {
        let overwrite = OVERWRITE.with(|o| *o.borrow());
        let directory = GrantedDirectory::get()?;
        if !overwrite && directory.exists(&artifact.file_name) {
            return Err(Error::Denied(format!(
                "{} already exists; remove it or set `overwrite = true`",
                directory.join(&artifact.file_name)
            )));
        }
        let file = PartialFile::create_in(directory, &artifact.file_name, &artifact.operation_id)?;
        Ok(Upload::new(FileUpload { file, overwrite }))
    }
}

struct FileUpload {
    file: PartialFile,
    overwrite: bool,
}

impl GuestUpload for FileUpload {
    fn write(&self, chunk: Vec<u8>) -> Result<(), Error> {
        self.file.write_all(&chunk)
    }

    fn finish(this: Upload) -> Result<EgressResult, Error> {
        let upload: FileUpload = this.into_inner();
        let size = upload.file.len();
        let location = upload.file.commit(upload.overwrite, false)?;
        log(Level::Info, &format!("stored {size} bytes in {location}"));
        Ok(EgressResult { location })
    }

    fn abort(this: Upload) -> Result<(), Error> {
        let upload: FileUpload = this.into_inner();
        upload.file.abort()
    }
}

diagmon_egress_sdk::export_provider!(Component);
"#;

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn a_rust_project_carries_the_contract_and_the_sdk() {
        let dir = tempfile::tempdir().unwrap();
        let project = dir.path().join("my-provider");
        let files = write_template(&project, TemplateLanguage::Rust).unwrap();
        assert!(files.contains(&PathBuf::from("diagmon-egress-sdk/src/fs.rs")));
        assert_eq!(
            std::fs::read_to_string(project.join("wit/egress.wit")).unwrap(),
            WIT
        );
        let manifest = std::fs::read_to_string(project.join("Cargo.toml")).unwrap();
        assert!(manifest.contains("name = \"my-provider\""), "{manifest}");
        assert!(
            write_template(&project, TemplateLanguage::Rust)
                .unwrap_err()
                .contains("exists already")
        );
    }

    #[test]
    fn bad_names_and_languages_are_refused_with_the_fix() {
        let dir = tempfile::tempdir().unwrap();
        assert!(
            write_template(&dir.path().join("1 bad"), TemplateLanguage::Python)
                .unwrap_err()
                .contains("not a usable project name")
        );
        assert!(
            "cobol"
                .parse::<TemplateLanguage>()
                .unwrap_err()
                .contains("use `rust`, `python`, `js` or `c`")
        );
    }

    #[test]
    fn js_and_c_projects_carry_the_example_the_contract_and_a_build_script_of_their_own() {
        let dir = tempfile::tempdir().unwrap();
        let js = dir.path().join("my-js");
        let files = write_template(&js, "js".parse().unwrap()).unwrap();
        assert!(files.contains(&PathBuf::from("package-lock.json")));
        assert_eq!(
            std::fs::read_to_string(js.join("wit/egress.wit")).unwrap(),
            WIT
        );
        let build = std::fs::read_to_string(js.join("build.sh")).unwrap();
        assert!(build.contains("WIT=${WIT:-wit}") && build.contains("OUT=${OUT:-my_js.wasm}"));
        let lock = std::fs::read_to_string(js.join("package-lock.json")).unwrap();
        assert!(lock.contains("\"name\": \"my-js\"") && !lock.contains(JS_PACKAGE_NAME));

        let c = dir.path().join("my-c");
        write_template(&c, "c".parse().unwrap()).unwrap();
        let build = std::fs::read_to_string(c.join("build.sh")).unwrap();
        assert!(build.contains("WIT=${WIT:-wit}") && build.contains("OUT=${OUT:-my_c.wasm}"));
        assert!(
            std::fs::metadata(c.join("build.sh"))
                .unwrap()
                .permissions()
                .mode()
                & 0o111
                != 0,
            "build.sh is executable"
        );
        assert!(
            std::fs::read_to_string(c.join("provider.c"))
                .unwrap()
                .contains("#include \"egress_provider.h\"")
        );
    }
}
