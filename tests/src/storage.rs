//! Real object-storage servers for the object-storage egress tests: moto (S3) and Azurite (Azure
//! Blob Storage), each started for one test on a free loopback port and killed when dropped.
//!
//! The servers live in a cache folder ([`cache_dir`]) that `bash tests/services/install.sh`
//! fills (`tests/run` runs it). Objects are read back with `tests/services/storage_client.py`
//! (boto3 for S3, SharedKey-signed HTTP for Azure), a client independent of diagmon and of the
//! `object_store` crate.
//!
//! One server per test costs 0.5–1.3 s of start-up and keeps tests apart: a test may kill its
//! server, switch its auth on, or leave its bucket missing.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// How long a server may take to answer after it was started.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// The command that fills the cache, for error messages.
const INSTALL_HINT: &str =
    "run `bash tests/services/install.sh` from the repository root (tests/run does)";

/// Azurite's well-known development account.
pub const AZURITE_ACCOUNT: &str = "devstoreaccount1";
/// The key of [`AZURITE_ACCOUNT`], published in Microsoft's Azurite documentation.
pub const AZURITE_KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

/// The server cache folder: `$DIAGMON_STORAGE_CACHE`, or `<workspace root>/.cache/object-storage`.
pub fn cache_dir() -> PathBuf {
    match std::env::var_os("DIAGMON_STORAGE_CACHE") {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir),
        _ => Path::new(env!("CARGO_MANIFEST_DIR")).join("../.cache/object-storage"),
    }
}

fn installed(path: PathBuf) -> PathBuf {
    assert!(
        path.exists(),
        "{} is missing: the object-storage test servers are not installed; {INSTALL_HINT}",
        path.display()
    );
    path
}

/// A free loopback port (bound, then released).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free loopback port")
        .port()
}

/// Sends `GET path` and returns the status code, if the server answers.
fn http_status(port: u16, path: &str) -> Option<u16> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut head = [0u8; 12];
    stream.read_exact(&mut head).ok()?;
    std::str::from_utf8(&head[9..12]).ok()?.parse().ok()
}

/// Waits until the server on `port` answers `GET path`, or panics with its output.
fn wait_until_serving(child: &mut Child, name: &str, port: u16, path: &str, log: &Path) {
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        if http_status(port, path).is_some() {
            return;
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!(
                "{name} exited with {status} before serving; its output:\n{}",
                std::fs::read_to_string(log).unwrap_or_default()
            );
        }
        assert!(
            Instant::now() < deadline,
            "{name} did not answer on port {port} within {START_TIMEOUT:?}; its output:\n{}",
            std::fs::read_to_string(log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Makes the server die with the thread that starts it (the test's), so that a test binary
/// killed from outside leaves no server behind; `Drop` kills it otherwise.
fn die_with_test(command: &mut Command) -> &mut Command {
    use std::os::unix::process::CommandExt;
    // SAFETY: prctl(2) is async-signal-safe and touches no memory of the parent.
    unsafe {
        command.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        })
    }
}

fn kill(child: &mut Child) {
    let _ = child.kill();
    let _ = child.wait();
}

/// What the independent client found at an object.
#[derive(Debug, Clone)]
pub struct StoredObject {
    /// The object's bytes.
    pub bytes: Vec<u8>,
    /// Its content type.
    pub content_type: Option<String>,
    /// Its user metadata, names as the store returns them (lower case).
    pub metadata: serde_json::Map<String, Value>,
}

/// Runs `storage_client.py` with the moto virtualenv's Python; `None` when it says the object
/// (or bucket, or container) does not exist.
fn client(args: &[&str]) -> Option<Value> {
    let python = installed(cache_dir().join("moto/bin/python"));
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("services/storage_client.py");
    let output = Command::new(python)
        .arg(script)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run storage_client.py");
    match output.status.code() {
        Some(0) => {
            Some(serde_json::from_slice(&output.stdout).expect("storage_client.py prints JSON"))
        }
        Some(3) => None,
        _ => panic!(
            "storage_client.py {} failed ({}):\n{}",
            args.join(" "),
            output.status,
            String::from_utf8_lossy(&output.stderr)
        ),
    }
}

/// Runs a `*-get` command into a temporary file and reads the result.
fn get_object(args: &[&str]) -> Option<StoredObject> {
    let out = tempfile::NamedTempFile::new().expect("a temporary file");
    let out_path = out.path().display().to_string();
    let mut args: Vec<&str> = args.to_vec();
    // The output file goes after the object's coordinates, before any options.
    let at = args
        .iter()
        .position(|a| a.starts_with("--"))
        .unwrap_or(args.len());
    args.insert(at, &out_path);
    let info = client(&args)?;
    let bytes = std::fs::read(out.path()).expect("read the object's bytes");
    Some(StoredObject {
        bytes,
        content_type: info["content_type"].as_str().map(str::to_owned),
        metadata: info["metadata"].as_object().cloned().unwrap_or_default(),
    })
}

fn strings(value: Option<Value>) -> Option<Vec<String>> {
    value.map(|v| {
        v.as_array()
            .expect("a JSON list")
            .iter()
            .map(|s| s.as_str().expect("a string").to_owned())
            .collect()
    })
}

/// A moto S3 server (`moto_server`), in memory. Auth is off until [`Moto::enable_auth`].
pub struct Moto {
    child: Child,
    port: u16,
    _log_dir: tempfile::TempDir,
    /// The key the server accepts once auth is on (before: any key).
    pub access_key_id: String,
    /// The secret of [`Moto::access_key_id`].
    pub secret_access_key: String,
}

impl Moto {
    /// Starts a moto server on a free loopback port and waits (≤ 30 s) until it answers.
    pub fn start() -> Moto {
        let binary = installed(cache_dir().join("moto/bin/moto_server"));
        let log_dir = tempfile::tempdir().expect("a temporary directory");
        let log = log_dir.path().join("moto.log");
        let port = free_port();
        let mut child = die_with_test(&mut Command::new(binary))
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&log).expect("the log file"))
            .stderr(std::fs::File::create(&log).expect("the log file"))
            .spawn()
            .expect("start moto_server");
        wait_until_serving(&mut child, "moto_server", port, "/moto-api/", &log);
        Moto {
            child,
            port,
            _log_dir: log_dir,
            access_key_id: "testing".to_owned(),
            secret_access_key: "testing".to_owned(),
        }
    }

    /// `http://127.0.0.1:PORT`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The server's port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Creates a bucket.
    pub fn create_bucket(&self, bucket: &str) {
        client(&[
            "s3-create-bucket",
            &self.endpoint(),
            bucket,
            "--key",
            &self.access_key_id,
            "--secret",
            &self.secret_access_key,
        ])
        .expect("the bucket is created");
    }

    /// Switches signature checks on: from now on only [`Moto::access_key_id`] and
    /// [`Moto::secret_access_key`] (a fresh IAM user's key) are accepted.
    pub fn enable_auth(&mut self) {
        let keys = client(&["s3-enable-auth", &self.endpoint()]).expect("auth switched on");
        self.access_key_id = keys["access_key_id"].as_str().unwrap().to_owned();
        self.secret_access_key = keys["secret_access_key"].as_str().unwrap().to_owned();
    }

    /// The object at `key` in `bucket`, read with boto3; `None` if there is none.
    pub fn get(&self, bucket: &str, key: &str) -> Option<StoredObject> {
        get_object(&[
            "s3-get",
            &self.endpoint(),
            bucket,
            key,
            "--key",
            &self.access_key_id,
            "--secret",
            &self.secret_access_key,
        ])
    }

    /// The keys under `prefix` in `bucket`.
    pub fn list(&self, bucket: &str, prefix: &str) -> Vec<String> {
        strings(client(&[
            "s3-list",
            &self.endpoint(),
            bucket,
            prefix,
            "--key",
            &self.access_key_id,
            "--secret",
            &self.secret_access_key,
        ]))
        .unwrap_or_default()
    }

    /// The keys of multipart uploads begun and neither completed nor aborted.
    pub fn unfinished_uploads(&self, bucket: &str) -> Vec<String> {
        strings(client(&[
            "s3-list-uploads",
            &self.endpoint(),
            bucket,
            "--key",
            &self.access_key_id,
            "--secret",
            &self.secret_access_key,
        ]))
        .unwrap_or_default()
    }

    /// Kills the server (SIGKILL): its objects are gone with it.
    pub fn kill(&mut self) {
        kill(&mut self.child);
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        kill(&mut self.child);
    }
}

/// An Azurite Blob Storage server, keeping its data in a temporary folder, so that it can be
/// killed and started again on the same data ([`Azurite::restart`]).
pub struct Azurite {
    child: Child,
    port: u16,
    data: tempfile::TempDir,
}

impl Azurite {
    /// Starts Azurite on a free loopback port and waits (≤ 30 s) until it answers.
    pub fn start() -> Azurite {
        let data = tempfile::tempdir().expect("a temporary directory");
        let port = free_port();
        let child = Self::spawn(data.path(), port);
        Azurite { child, port, data }
    }

    fn spawn(data: &Path, port: u16) -> Child {
        let binary = installed(cache_dir().join("azurite/node_modules/.bin/azurite-blob"));
        let log = data.join("azurite.log");
        let mut child = die_with_test(&mut Command::new(binary))
            .args(["--blobHost", "127.0.0.1", "--blobPort", &port.to_string()])
            .arg("--location")
            .arg(data)
            // No telemetry; object_store may speak a newer API version than this Azurite.
            .args(["--disableTelemetry", "--silent", "--skipApiVersionCheck"])
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&log).expect("the log file"))
            .stderr(Stdio::null())
            .spawn()
            .expect("start azurite-blob");
        wait_until_serving(&mut child, "azurite-blob", port, "/", &log);
        child
    }

    /// `http://127.0.0.1:PORT/devstoreaccount1`, the account's endpoint.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}/{AZURITE_ACCOUNT}", self.port)
    }

    /// Creates a container (an existing one is fine).
    pub fn create_container(&self, container: &str) {
        client(&[
            "az-create-container",
            &self.endpoint(),
            AZURITE_ACCOUNT,
            AZURITE_KEY,
            container,
        ])
        .expect("the container is created");
    }

    /// The blob `name` in `container`, read with a SharedKey-signed GET; `None` if there is none.
    pub fn get(&self, container: &str, name: &str) -> Option<StoredObject> {
        get_object(&[
            "az-get",
            &self.endpoint(),
            AZURITE_ACCOUNT,
            AZURITE_KEY,
            container,
            name,
        ])
    }

    /// The blobs under `prefix`, including those with only uncommitted blocks (an unfinished
    /// upload).
    pub fn list(&self, container: &str, prefix: &str) -> Vec<String> {
        strings(client(&[
            "az-list",
            &self.endpoint(),
            AZURITE_ACCOUNT,
            AZURITE_KEY,
            container,
            prefix,
        ]))
        .unwrap_or_default()
    }

    /// Kills the server (SIGKILL); its data stays for [`Azurite::restart`].
    pub fn kill(&mut self) {
        kill(&mut self.child);
    }

    /// Stops the server (SIGSTOP) without closing its sockets: a hung endpoint. Connections are
    /// still accepted by the kernel, requests get no answer.
    pub fn freeze(&self) {
        // SAFETY: kill(2) on our own child's pid.
        let result = unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGSTOP) };
        assert_eq!(result, 0, "SIGSTOP azurite");
    }

    /// Starts the server again on the same port and data.
    pub fn restart(&mut self) {
        kill(&mut self.child);
        self.child = Self::spawn(self.data.path(), self.port);
    }
}

impl Drop for Azurite {
    fn drop(&mut self) {
        kill(&mut self.child);
    }
}
