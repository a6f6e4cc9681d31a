//! WebAssembly guests the tests need, built from source on first use: the misbehaving fixtures
//! of `tests/plugins/` and the example providers of `examples/` (Rust, and Python through
//! componentize-py).

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// How a guest workspace is built, shared with `core/build.rs`.
#[path = "../../core/build/wasm_guests.rs"]
mod wasm_guests;

/// The target directory of this workspace.
pub fn target_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary's path");
    // <target>/<profile>/deps/<test binary>
    exe.ancestors()
        .nth(3)
        .expect("the test binary is inside the target dir")
        .to_owned()
}

/// Builds a guest workspace (wasm32-wasip2, release) into `<target>/<target_name>`; returns the
/// directory holding its components.
fn build_guests(manifest: &Path, target_name: &str) -> PathBuf {
    wasm_guests::build_workspace(manifest, &target_dir().join(target_name))
        .unwrap_or_else(|error| panic!("{error}"))
}

/// A fixture component from `tests/plugins/`, built on first use.
pub fn fixture(name: &str) -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    let directory = BUILT.get_or_init(|| {
        build_guests(
            &Path::new(env!("CARGO_MANIFEST_DIR")).join("plugins/Cargo.toml"),
            "wasm-fixtures",
        )
    });
    let path = directory.join(format!("fixture_{}.wasm", name.replace('-', "_")));
    assert!(path.is_file(), "no fixture {}", path.display());
    path
}

/// An example component from `examples/` (Rust), built on first use.
pub fn rust_example(library: &str) -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    let directory = BUILT.get_or_init(|| {
        build_guests(
            &Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/Cargo.toml"),
            "wasm-examples",
        )
    });
    let path = directory.join(format!("{library}.wasm"));
    assert!(path.is_file(), "no example {}", path.display());
    path
}

/// The Python example, built with componentize-py on first use. componentize-py is looked for in
/// `<target>/componentize-py` (a virtualenv `tests/run` creates), then on `PATH`.
pub fn python_example() -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            let venv = target_dir().join("componentize-py/bin/componentize-py");
            let tool = if venv.is_file() {
                venv
            } else {
                PathBuf::from("componentize-py")
            };
            let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/python-sidecar");
            let output = target_dir().join("wasm-examples/python_sidecar.wasm");
            std::fs::create_dir_all(output.parent().unwrap()).unwrap();
            // componentize-py's output differs from run to run, which would defeat the compile
            // cache (the Python component takes a minute to compile in a debug build): keep the
            // component while its sources are older.
            let modified = |path: &Path| std::fs::metadata(path).and_then(|m| m.modified()).ok();
            let newest_source = ["app.py", "provider.py", "../../wit/diagmon-egress@0.1.0/egress.wit"]
                .iter()
                .filter_map(|file| modified(&source.join(file)))
                .max();
            if let (Some(built), Some(source)) = (modified(&output), newest_source)
                && built > source
            {
                return output;
            }
            let result = std::process::Command::new(&tool)
                .current_dir(&source)
                .args(["-d", "../../wit/diagmon-egress@0.1.0", "-w", "egress-provider", "componentize", "app", "-o"])
                .arg(&output)
                .output()
                .unwrap_or_else(|e| {
                    panic!(
                        "cannot run {} ({e}); install it with `python3 -m venv target/componentize-py && \
                         target/componentize-py/bin/pip install componentize-py==0.25.1` (tests/run does)",
                        tool.display()
                    )
                });
            assert!(
                result.status.success(),
                "componentize-py failed:\n{}",
                String::from_utf8_lossy(&result.stderr)
            );
            output
        })
        .clone()
}

/// Runs an example's own `build.sh` with `env` (which points it at the toolchain `tests/run`
/// installed under the target directory and at `output`), unless `output` is newer than every
/// file of the example (but `.wasm` files) and the contract: componentize-js, like componentize-py, does not build
/// the same bytes twice, which would defeat the compile cache.
fn build_with_script(example: &str, output: &Path, env: &[(&str, PathBuf)]) -> PathBuf {
    let source = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../examples")
        .join(example);
    let contract = Path::new(env!("CARGO_MANIFEST_DIR")).join("../wit/diagmon-egress@0.1.0");
    std::fs::create_dir_all(output.parent().expect("the output is in a directory"))
        .unwrap_or_else(|e| panic!("cannot create the directory of {}: {e}", output.display()));
    let modified = |path: &Path| std::fs::metadata(path).and_then(|m| m.modified()).ok();
    let newest_source = [&source, &contract]
        .iter()
        .flat_map(|dir| std::fs::read_dir(dir).into_iter().flatten().flatten())
        .filter(|entry| entry.file_type().is_ok_and(|t| t.is_file()))
        // A component someone built by hand next to the sources is an output, not a source.
        .filter(|entry| entry.path().extension().is_none_or(|ext| ext != "wasm"))
        .filter_map(|entry| modified(&entry.path()))
        .max();
    if let (Some(built), Some(newest)) = (modified(output), newest_source)
        && built > newest
    {
        return output.to_owned();
    }
    let mut command = std::process::Command::new("sh");
    command.arg(source.join("build.sh")).env("OUT", output);
    for (name, value) in env {
        command.env(name, value);
    }
    let result = command
        .output()
        .unwrap_or_else(|e| panic!("cannot run {example}/build.sh: {e}"));
    assert!(
        result.status.success(),
        "{example}/build.sh failed (tests/run installs its toolchain):\n{}{}",
        String::from_utf8_lossy(&result.stdout),
        String::from_utf8_lossy(&result.stderr)
    );
    output.to_owned()
}

/// The JavaScript example, built by its `build.sh` with the componentize-js that `tests/run`
/// installs from the example's `package-lock.json` into `<target>/componentize-js`.
pub fn js_example() -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            build_with_script(
                "js-object-store",
                &target_dir().join("wasm-examples/js_object_store.wasm"),
                &[(
                    "COMPONENTIZE_JS",
                    target_dir().join("componentize-js/node_modules/.bin/componentize-js"),
                )],
            )
        })
        .clone()
}

/// The C example, built by its `build.sh` with the wit-bindgen and wasm-tools that `tests/run`
/// installs into `<target>/c-tools`, and the preview1 adapter it fetches through cargo.
pub fn c_example() -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            let tools = target_dir().join("c-tools/bin");
            build_with_script(
                "c-directory",
                &target_dir().join("wasm-examples/c_directory.wasm"),
                &[
                    ("WIT_BINDGEN", tools.join("wit-bindgen")),
                    ("WASM_TOOLS", tools.join("wasm-tools")),
                    ("BUILD_DIR", target_dir().join("c-example-build")),
                ],
            )
        })
        .clone()
}
