//! A real headless Chromium (Debian's `chromium` package), driven over WebDriver by fantoccini
//! through Debian's `chromedriver`, for the web console's tests.
//!
//! Each [`Browser`] runs its own chromedriver on a free loopback port with a fresh profile
//! (`--user-data-dir`) and its own download folder, so that tests never share state. `tests/run`
//! installs both packages.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};

/// Debian's Chromium.
const CHROMIUM: &str = "/usr/bin/chromium";
/// Debian's chromedriver, of the same version.
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
/// The narrowest window headless Chromium makes; narrower screens are emulated.
const MINIMUM_WINDOW_WIDTH: u32 = 500;
/// How long [`Browser::wait_until`] waits unless told otherwise.
pub const DEFAULT_WAIT: Duration = Duration::from_secs(20);

/// A headless Chromium session; chromedriver and the browser are killed when dropped.
pub struct Browser {
    client: Client,
    chromedriver: Child,
    downloads: tempfile::TempDir,
    _profile: tempfile::TempDir,
}

impl Browser {
    /// Starts chromedriver and a headless Chromium with a fresh profile and a viewport of
    /// `width` x `height` CSS pixels (a phone's screen is emulated).
    pub async fn start(width: u32, height: u32) -> Browser {
        for program in [CHROMIUM, CHROMEDRIVER] {
            assert!(
                Path::new(program).is_file(),
                "{program} is missing: install Debian's chromium and chromium-driver (tests/run does)"
            );
        }
        let port = free_port();
        let mut command = Command::new(CHROMEDRIVER);
        command
            .arg(format!("--port={port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            // Its own process group, so that the browsers it starts die with it (see Drop).
            .process_group(0);
        let chromedriver = command.spawn().expect("start chromedriver");
        let profile = tempfile::Builder::new()
            .prefix("diagmon-chromium-")
            .tempdir()
            .expect("a profile folder");
        let downloads = tempfile::Builder::new()
            .prefix("diagmon-downloads-")
            .tempdir()
            .expect("a download folder");
        let mut capabilities = json!({
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": CHROMIUM,
                "args": [
                    "--headless",
                    "--no-sandbox",
                    "--disable-gpu",
                    "--disable-quic",
                    "--no-first-run",
                    "--disable-background-networking",
                    "--disable-component-update",
                    "--disable-sync",
                    "--disable-dev-shm-usage",
                    format!("--user-data-dir={}", profile.path().display()),
                    format!("--window-size={width},{height}"),
                ],
                "prefs": {
                    "download.default_directory": downloads.path().display().to_string(),
                    "download.prompt_for_download": false,
                    "download.directory_upgrade": true,
                },
            },
        });
        if width < MINIMUM_WINDOW_WIDTH {
            // Chromium will not make a window that narrow: emulate the screen instead.
            capabilities["goog:chromeOptions"]["mobileEmulation"] = json!({
                "deviceMetrics": {"width": width, "height": height, "pixelRatio": 1.0},
            });
        }
        let Value::Object(capabilities) = capabilities else {
            unreachable!("a JSON object literal")
        };
        let url = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(30);
        let client = loop {
            let connector = hyper_util::client::legacy::connect::HttpConnector::new();
            match ClientBuilder::new(connector)
                .capabilities(capabilities.clone())
                .connect(&url)
                .await
            {
                Ok(client) => break client,
                // chromedriver is still starting up.
                Err(_) if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(error) => panic!("no WebDriver session from chromedriver on {url}: {error}"),
            }
        };
        Browser {
            client,
            chromedriver,
            downloads,
            _profile: profile,
        }
    }

    /// The WebDriver client, for what the helpers here do not cover.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Opens `url` and waits for the page to load.
    pub async fn goto(&self, url: &str) {
        self.client
            .goto(url)
            .await
            .unwrap_or_else(|error| panic!("open {url}: {error}"));
    }

    /// Runs `script` (a function body; `arguments[i]` are `args`) in the page and returns its
    /// result.
    pub async fn eval(&self, script: &str, args: Vec<Value>) -> Value {
        self.client
            .execute(script, args)
            .await
            .unwrap_or_else(|error| panic!("run script `{script}`: {error}"))
    }

    /// Evaluates `script` every 100 ms until it returns something other than null, undefined,
    /// false or an empty string, and returns that; panics after `timeout` naming `what`.
    pub async fn wait_until(&self, what: &str, timeout: Duration, script: &str) -> Value {
        let deadline = Instant::now() + timeout;
        loop {
            let value = self.eval(script, Vec::new()).await;
            let not_yet = matches!(value, Value::Null | Value::Bool(false))
                || value.as_str().is_some_and(str::is_empty);
            if !not_yet {
                return value;
            }
            assert!(
                Instant::now() < deadline,
                "timed out after {timeout:?} waiting for {what}; the page shows:\n{}",
                self.eval("return document.body.innerText", Vec::new())
                    .await
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Clicks the element `css` selects.
    pub async fn click(&self, css: &str) {
        self.find(css)
            .await
            .click()
            .await
            .unwrap_or_else(|error| panic!("click {css}: {error}"));
    }

    /// Replaces the text of the input `css` selects by typing `text`.
    pub async fn type_into(&self, css: &str, text: &str) {
        let element = self.find(css).await;
        element
            .clear()
            .await
            .unwrap_or_else(|error| panic!("clear {css}: {error}"));
        element
            .send_keys(text)
            .await
            .unwrap_or_else(|error| panic!("type into {css}: {error}"));
    }

    /// Picks the option of value `value` in the select `css` selects.
    pub async fn select(&self, css: &str, value: &str) {
        self.find(css)
            .await
            .select_by_value(value)
            .await
            .unwrap_or_else(|error| panic!("select {value} in {css}: {error}"));
    }

    /// The element `css` selects (it must exist).
    pub async fn find(&self, css: &str) -> fantoccini::elements::Element {
        self.client
            .find(Locator::Css(css))
            .await
            .unwrap_or_else(|error| panic!("find {css}: {error}"))
    }

    /// Saves a screenshot of the viewport as `target/console-screenshots/<name>.png` and returns
    /// its path.
    pub async fn screenshot(&self, name: &str) -> PathBuf {
        let png = self
            .client
            .screenshot()
            .await
            .unwrap_or_else(|error| panic!("screenshot {name}: {error}"));
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/console-screenshots");
        std::fs::create_dir_all(&dir).expect("create target/console-screenshots");
        let path = dir.join(format!("{name}.png"));
        std::fs::write(&path, png).expect("write the screenshot");
        path
    }

    /// Waits (≤ `timeout`) until a finished download named `file_name` is in the download folder
    /// and returns its bytes.
    pub async fn downloaded(&self, file_name: &str, timeout: Duration) -> Vec<u8> {
        let path = self.downloads.path().join(file_name);
        let partial = self
            .downloads
            .path()
            .join(format!("{file_name}.crdownload"));
        let deadline = Instant::now() + timeout;
        // Chromium writes `<name>.crdownload` and renames it when the download is complete.
        while !path.is_file() || partial.exists() {
            assert!(
                Instant::now() < deadline,
                "{file_name} was not downloaded within {timeout:?}; the folder holds {:?}",
                std::fs::read_dir(self.downloads.path())
                    .map(|dir| dir.flatten().map(|e| e.file_name()).collect::<Vec<_>>())
                    .unwrap_or_default()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        std::fs::read(&path).expect("read the download")
    }

    /// Opens `url` with `localhost` in place of `127.0.0.1`: a page of another origin, so that a
    /// first load measured next is what a user's running browser pays. Its network service and
    /// renderer are up, while the measured origin has no cache and no open connection. (A fresh
    /// browser's very first navigation adds ~150 ms of its own start-up on a 2-core machine,
    /// which is not the page's cost.)
    pub async fn open_another_origin(&self, url: &str) {
        let other_origin = url.replacen("127.0.0.1", "localhost", 1);
        assert_ne!(other_origin, url, "{url} is not on 127.0.0.1");
        self.goto(&other_origin).await;
    }

    /// Waits for the web console's first render with data, then returns what the browser
    /// measured of the load: bytes transferred (all, and the console's own files), requests, and
    /// milliseconds from the navigation to the HTML's last byte, to DOMContentLoaded (the
    /// modules have run), to the first contentful paint and to the first render with data
    /// (`firstRenderMs`), with when `GET /processes` started and how long it took, and each
    /// resource's start and end.
    pub async fn first_load_figures(&self) -> Value {
        self.wait_until(
            "the first render",
            DEFAULT_WAIT,
            "return document.documentElement.dataset.rendered === 'true'",
        )
        .await;
        self.eval(
            "const navigation = performance.getEntriesByType('navigation')[0];
             const resources = performance.getEntriesByType('resource');
             const sum = entries => entries.reduce((total, entry) => total + entry.transferSize, 0);
             const own = resources.filter(entry => new URL(entry.name).pathname.startsWith('/ui/'));
             const render = performance.getEntriesByName('diagmon-console-first-render')[0];
             const paint = performance.getEntriesByName('first-contentful-paint')[0];
             const processes = resources.find(entry => new URL(entry.name).pathname === '/processes');
             return {
                 domContentLoadedMs: navigation.domContentLoadedEventEnd,
                 processesRequestStartMs: processes.startTime,
                 processesRequestMs: processes.duration,
                 totalBytes: navigation.transferSize + sum(resources),
                 consoleBytes: navigation.transferSize + sum(own),
                 requests: 1 + resources.length,
                 firstRenderMs: render.startTime,
                 firstContentfulPaintMs: paint ? paint.startTime : null,
                 responseEndMs: navigation.responseEnd,
                 resourcesMs: resources.map(entry => [
                     new URL(entry.name).pathname,
                     Math.round(entry.startTime),
                     Math.round(entry.responseEnd),
                 ]),
             };",
            Vec::new(),
        )
        .await
    }

    /// Ends the WebDriver session (closing the browser) and stops chromedriver.
    pub async fn close(self) {
        let _ = self.client.clone().close().await;
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // SAFETY: kill(2) on the process group of our own child.
        unsafe {
            libc::kill(-(self.chromedriver.id() as libc::pid_t), libc::SIGKILL);
        }
        let _ = self.chromedriver.wait();
    }
}

/// A loopback port that was free a moment ago.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|address| address.port())
        .expect("a free loopback port")
}
