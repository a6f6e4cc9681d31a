//! The web console end to end: Debian's headless Chromium (driven over WebDriver, see
//! `diagmon_tests::browser`) against the real `diagmon collect` binary and a real .NET Core 3.1
//! target. Every action goes through the page as a user would: clicks, typing, the keyboard.
//! Screenshots of the main views land in `target/console-screenshots/`.
//!
//! Needs `tests/run` (installs chromium, chromium-driver and the target, builds the binary).

use std::time::Duration;

use diagmon_tests::api::{get_json, sha256_hex, validated_nettrace};
use diagmon_tests::browser::{Browser, DEFAULT_WAIT};
use diagmon_tests::monitor::Monitor;
use diagmon_tests::target::{Program, TestTarget};
use reqwest::StatusCode;
use serde_json::{Value, json};

/// The most the console may transfer on its first load (page, modules, stylesheet, icon and
/// the API answers of its first render).
const FIRST_LOAD_BUDGET_BYTES: u64 = 150 * 1024;
/// The WebDriver key code of Enter.
const ENTER: &str = "\u{E007}";

/// A monitor that sees the targets in `target`'s TMPDIR.
fn monitor_for(target: &TestTarget, extra_config: &str, args: &[&str]) -> Monitor {
    let config = format!(
        "socket_dir = {:?}\n{extra_config}",
        target.tmpdir().display().to_string()
    );
    Monitor::start(&config, args)
}

/// Waits until the process table has a row for `pid`; returns its cells and uid.
async fn process_row(browser: &Browser, pid: u32) -> Value {
    browser
        .wait_until(
            &format!("a row for pid {pid}"),
            DEFAULT_WAIT,
            &format!(
                "const row = [...document.querySelectorAll('#processes tbody tr')]
                    .find(row => row.cells[1].textContent === '{pid}');
                 return row && !row.cells[6].textContent.startsWith('…')
                    ? {{ uid: row.dataset.uid, cells: [...row.cells].map(cell => cell.textContent) }}
                    : null;"
            ),
        )
        .await
}

/// Selects the process `pid` with the keyboard (Enter on its Select button).
async fn select_process(browser: &Browser, pid: u32) {
    let row = process_row(browser, pid).await;
    let uid = row["uid"].as_str().expect("the row's uid");
    browser
        .find(&format!("#processes tr[data-uid='{uid}'] button"))
        .await
        .send_keys(ENTER)
        .await
        .expect("press Enter on Select");
    browser
        .wait_until(
            "the capture form",
            DEFAULT_WAIT,
            "return !document.getElementById('capture').hidden",
        )
        .await;
}

/// Ticks exactly the profiles named.
async fn choose_profiles(browser: &Browser, profiles: &[&str]) {
    browser
        .eval(
            "for (const box of document.querySelectorAll('input[name=profile]')) {
                 if (box.checked !== arguments[0].includes(box.value)) { box.click(); }
             }",
            vec![json!(profiles)],
        )
        .await;
}

/// Waits for the newest operation to reach `status` (and, if `with_download`, for its Save
/// link); returns what its card shows: status, terms to values, the link's file name.
async fn newest_operation(
    browser: &Browser,
    status: &str,
    with_download: bool,
    timeout: Duration,
) -> Value {
    browser
        .wait_until(
            &format!("the newest operation to be {status}"),
            timeout,
            &format!(
                "const card = document.querySelector('#operations .operation');
                 if (!card || card.dataset.status !== '{status}') {{ return null; }}
                 const link = card.querySelector('a.download');
                 if ({with_download} && !link) {{ return null; }}
                 const shown = {{}};
                 for (const term of card.querySelectorAll('dt')) {{
                     shown[term.textContent] = term.nextElementSibling.textContent;
                 }}
                 return {{ id: card.dataset.operationId, shown, file: link ? link.download : null }};"
            ),
        )
        .await
}

/// The first load stays within its transfer budget, and its times are printed (not asserted:
/// they depend on the machine). The target sleeps: a busy one (the Worker burns three threads)
/// would measure how this 2-core machine shares its CPU rather than the console.
#[tokio::test]
async fn the_first_load_stays_within_its_budget() {
    let target = TestTarget::start(Program::HeapKeeper, &[]);
    let monitor = monitor_for(&target, "", &["--no-auth"]);
    let browser = Browser::start(1280, 1000).await;
    browser.open_another_origin(&monitor.url("/healthz")).await;
    browser.goto(&monitor.url("/ui")).await;
    let row = process_row(&browser, target.pid()).await;
    let command_line = row["cells"][6].as_str().unwrap_or_default();
    assert!(command_line.contains("HeapKeeper.dll"), "{row}");
    let figures = browser.first_load_figures().await;
    println!("console first load: {figures}");
    let total = figures["totalBytes"].as_u64().expect("a byte count");
    assert!(total > 0, "{figures}");
    assert!(
        total <= FIRST_LOAD_BUDGET_BYTES,
        "the first load transferred {total} bytes, over the {FIRST_LOAD_BUDGET_BYTES}-byte budget: {figures}"
    );
}

#[tokio::test]
async fn the_console_lists_the_target_and_downloads_a_complete_two_second_trace() {
    let target = TestTarget::start(Program::Worker, &[]);
    let monitor = monitor_for(&target, "", &["--no-auth"]);
    let browser = Browser::start(1280, 1000).await;
    browser.goto(&monitor.url("/ui")).await;

    let row = process_row(&browser, target.pid()).await;
    let cells: Vec<&str> = row["cells"]
        .as_array()
        .expect("cells")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(cells[2], "dotnet", "{cells:?}");
    assert_eq!(cells[4], "default", "{cells:?}");
    assert!(cells[6].contains("Worker.dll"), "{cells:?}");
    browser.screenshot("processes").await;

    select_process(&browser, target.pid()).await;
    // The dump control is there exactly when the server's API description lists `/dump`.
    let description: Value = get_json(&reqwest::Client::new(), monitor.url("/openapi.json")).await;
    let has_dump = description["paths"].get("/dump").is_some();
    let dump_shown = browser
        .eval(
            "return !document.getElementById('dump-form').hidden",
            Vec::new(),
        )
        .await;
    assert_eq!(
        dump_shown, has_dump,
        "dump control vs /dump in /openapi.json"
    );
    choose_profiles(&browser, &["Cpu"]).await;
    browser.type_into("#duration", "2").await;
    browser.click("#trace-form button[type=submit]").await;
    let done = newest_operation(&browser, "Succeeded", true, Duration::from_secs(60)).await;
    browser.screenshot("operations").await;

    let file = done["file"].as_str().expect("the offered file name");
    assert!(
        file.ends_with(&format!("_{}.nettrace", target.pid())),
        "{done}"
    );
    browser.click("#operations .operation a.download").await;
    let bytes = browser.downloaded(file, Duration::from_secs(30)).await;
    let summary = validated_nettrace(&bytes);
    assert!(
        summary.events_by_provider["Microsoft-DotNETCore-SampleProfiler"] > 0,
        "{summary:?}"
    );
    assert_eq!(done["shown"]["SHA-256"], sha256_hex(&bytes), "{done}");
    assert_eq!(
        done["shown"]["Events"],
        summary.events.to_string(),
        "{done}"
    );
    browser.close().await;
}

#[tokio::test]
async fn a_bad_keyword_shows_the_api_error_beside_its_field_and_the_console_fits_a_phone() {
    let target = TestTarget::start(Program::Worker, &[]);
    let monitor = monitor_for(&target, "", &["--no-auth"]);
    let browser = Browser::start(390, 844).await;
    browser.goto(&monitor.url("/ui")).await;
    select_process(&browser, target.pid()).await;

    browser
        .click("input[name=trace-source][value=providers]")
        .await;
    browser.type_into("#providers-0-keywords", "0xZZ").await;
    browser.type_into("#duration", "2").await;
    browser.click("#trace-form button[type=submit]").await;
    let message = browser
        .wait_until(
            "the keyword's error",
            DEFAULT_WAIT,
            "return document.getElementById('providers-0-keywords-error').textContent",
        )
        .await;
    // The page shows the API's own words for that field.
    let problem: Value = reqwest::Client::new()
        .post(monitor.url(&format!(
            "/trace?pid={}&durationSeconds=2",
            target.pid()
        )))
        .json(&json!({"providers": [{"name": "Microsoft-Windows-DotNETRuntime", "keywords": "0xZZ"}]}))
        .send()
        .await
        .expect("POST /trace")
        .json()
        .await
        .expect("a problem+json body");
    let expected = problem["errors"]["providers[0].keywords"][0]
        .as_str()
        .expect("the API names providers[0].keywords");
    assert!(expected.contains("0xZZ"), "{problem}");
    assert_eq!(message, expected, "{problem}");
    let field = browser
        .eval(
            "const input = document.getElementById('providers-0-keywords');
             return { invalid: input.getAttribute('aria-invalid'),
                      describedBy: input.getAttribute('aria-describedby') };",
            Vec::new(),
        )
        .await;
    assert_eq!(
        field,
        json!({"invalid": "true", "describedBy": "providers-0-keywords-error"})
    );
    browser
        .find("#providers-0-keywords")
        .await
        .click()
        .await
        .expect("focus the field");
    browser.screenshot("field-error-narrow").await;

    let layout = browser
        .eval(
            "const unlabelled = [...document.querySelectorAll('input, select, textarea, button')]
                 .filter(control => !(control.labels && control.labels.length)
                     && !control.getAttribute('aria-label') && !control.textContent.trim())
                 .map(control => control.outerHTML);
             return { unlabelled, width: window.innerWidth,
                      overflow: document.documentElement.scrollWidth - window.innerWidth };",
            Vec::new(),
        )
        .await;
    assert_eq!(layout["unlabelled"], json!([]), "{layout}");
    assert_eq!(layout["width"], 390, "{layout}");
    assert!(
        layout["overflow"].as_i64().expect("pixels") <= 0,
        "the page is wider than a 390 px screen: {layout}"
    );
    let operations = get_json(&reqwest::Client::new(), monitor.url("/operations")).await;
    assert_eq!(operations, json!([]), "a refused request starts nothing");
    browser.close().await;
}

#[tokio::test]
async fn stop_completes_an_endless_egressed_trace_and_cancel_offers_no_file() {
    let target = TestTarget::start(Program::Worker, &[]);
    let traces = tempfile::tempdir().expect("a folder for the traces");
    let monitor = monitor_for(
        &target,
        &format!(
            "[egress.providers.artifacts]\ncomponent = \"filesystem\"\ndirectory = {:?}\n",
            traces.path().display().to_string()
        ),
        &["--no-auth"],
    );
    let browser = Browser::start(1280, 1000).await;
    browser.goto(&monitor.url("/ui")).await;
    select_process(&browser, target.pid()).await;
    browser
        .wait_until(
            "the provider in Destination",
            DEFAULT_WAIT,
            "return document.querySelector('#destination option[value=artifacts]')",
        )
        .await;

    // An endless trace to the provider, stopped from its card.
    browser.select("#destination", "artifacts").await;
    choose_profiles(&browser, &["Cpu"]).await;
    browser.click("#until-stopped").await;
    browser.click("#trace-form button[type=submit]").await;
    let running = browser
        .wait_until(
            "a running operation with a throughput",
            DEFAULT_WAIT,
            "const card = document.querySelector('#operations .operation');
             if (!card || card.dataset.status !== 'Running') { return null; }
             const terms = [...card.querySelectorAll('dt')].map(term => term.textContent);
             return terms.includes('Throughput') ? card.innerText : null;",
        )
        .await;
    println!("running: {running}");
    browser.screenshot("operation-running").await;
    browser
        .click("#operations .operation button[aria-label^=Stop]")
        .await;
    let done = newest_operation(&browser, "Succeeded", false, Duration::from_secs(60)).await;
    let location = done["shown"]["Resource location"]
        .as_str()
        .expect("a resource location");
    assert!(
        location.starts_with(&traces.path().display().to_string()),
        "{done}"
    );
    let bytes = std::fs::read(location).expect("the egressed trace");
    let summary = validated_nettrace(&bytes);
    assert_eq!(done["shown"]["SHA-256"], sha256_hex(&bytes), "{done}");
    assert!(summary.events > 0);

    // An endless download, cancelled: the operation is Cancelled and no file is offered.
    browser.select("#destination", "").await;
    browser.click("#trace-form button[type=submit]").await;
    browser
        .wait_until(
            "a second, running operation",
            DEFAULT_WAIT,
            &format!(
                "const card = document.querySelector('#operations .operation');
                 return card && card.dataset.operationId !== '{}' && card.dataset.status === 'Running';",
                done["id"].as_str().expect("an id")
            ),
        )
        .await;
    browser
        .click("#operations .operation button[aria-label^=Cancel]")
        .await;
    let cancelled = newest_operation(&browser, "Cancelled", false, DEFAULT_WAIT).await;
    let file = browser
        .wait_until(
            "the cut download to be reported",
            DEFAULT_WAIT,
            "const card = document.querySelector('#operations .operation');
             const text = card.innerText;
             return text.includes('cut short') ? text : null;",
        )
        .await;
    assert!(
        browser
            .eval(
                "return document.querySelector('#operations .operation a.download')",
                Vec::new()
            )
            .await
            .is_null(),
        "a cancelled download offers no file: {file} {cancelled}"
    );
    browser.screenshot("operations-stopped-and-cancelled").await;
    browser.close().await;
}

#[tokio::test]
async fn with_auth_on_the_console_asks_for_the_key_then_works() {
    let target = TestTarget::start(Program::Worker, &[]);
    let monitor = monitor_for(&target, "", &["--temp-apikey"]);
    let header = monitor
        .stdout_lines()
        .into_iter()
        .find(|line| line.starts_with("Authorization: Bearer "))
        .expect("--temp-apikey prints the header");
    let browser = Browser::start(1280, 900).await;
    browser.goto(&monitor.url("/")).await;
    let path = browser.eval("return location.pathname", Vec::new()).await;
    assert_eq!(path, "/ui", "/ redirects to the console");

    let notice = browser
        .wait_until(
            "the request for a key",
            DEFAULT_WAIT,
            "const notice = document.getElementById('auth-notice');
             return notice.hidden ? null : notice.innerText;",
        )
        .await;
    assert!(
        notice
            .as_str()
            .expect("text")
            .contains("diagmon generatekey"),
        "{notice}"
    );
    let focused = browser
        .eval("return document.activeElement.id", Vec::new())
        .await;
    assert_eq!(focused, "api-key", "the key field has the focus");
    browser.screenshot("api-key").await;

    // Paste the whole line `generatekey` and `--temp-apikey` print, and press Enter.
    browser
        .find("#api-key")
        .await
        .send_keys(&format!("{header}{ENTER}"))
        .await
        .expect("type the key");
    process_row(&browser, target.pid()).await;
    let stored = browser
        .eval(
            "return { session: sessionStorage.getItem('diagmon.apiKey'), local: localStorage.length,
                      notice: document.getElementById('auth-notice').hidden };",
            Vec::new(),
        )
        .await;
    let token = header.trim_start_matches("Authorization: Bearer ");
    assert_eq!(
        stored,
        json!({"session": token, "local": 0, "notice": true})
    );
    select_process(&browser, target.pid()).await;
    choose_profiles(&browser, &["Cpu"]).await;
    browser.type_into("#duration", "1").await;
    browser.click("#trace-form button[type=submit]").await;
    newest_operation(&browser, "Succeeded", true, Duration::from_secs(60)).await;
    browser.close().await;
}

#[tokio::test]
async fn the_console_is_static_locked_down_and_the_only_unauthenticated_addition() {
    let monitor = Monitor::start("", &["--temp-apikey"]);
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("a client");

    let root = client.get(monitor.url("/")).send().await.expect("GET /");
    assert!(root.status().is_redirection(), "{}", root.status());
    assert_eq!(root.headers()["location"], "/ui");

    let page = client
        .get(monitor.url("/ui"))
        .send()
        .await
        .expect("GET /ui");
    assert_eq!(page.status(), StatusCode::OK);
    let headers = page.headers().clone();
    assert_eq!(headers["content-type"], "text/html; charset=utf-8");
    let policy = headers["content-security-policy"].to_str().expect("ASCII");
    for directive in [
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "frame-ancestors 'none'",
    ] {
        assert!(policy.contains(directive), "{policy}");
    }
    assert!(!policy.contains("unsafe-inline"), "{policy}");
    assert_eq!(headers["x-content-type-options"], "nosniff");
    assert_eq!(headers["referrer-policy"], "no-referrer");
    assert_eq!(headers["cache-control"], "no-cache");
    let html = page.text().await.expect("the page");
    assert!(html.contains(r#"<script type="module" src="/ui/console.js">"#));

    // The browser's copy is revalidated by its ETag.
    let etag = headers["etag"].clone();
    let again = client
        .get(monitor.url("/ui"))
        .header("if-none-match", etag)
        .send()
        .await
        .expect("GET /ui again");
    assert_eq!(again.status(), StatusCode::NOT_MODIFIED);

    for (file, content_type) in [
        ("console.js", "text/javascript; charset=utf-8"),
        ("boot.js", "text/javascript; charset=utf-8"),
        ("api.js", "text/javascript; charset=utf-8"),
        ("console.css", "text/css; charset=utf-8"),
        ("icon.svg", "image/svg+xml"),
    ] {
        let response = client
            .get(monitor.url(&format!("/ui/{file}")))
            .send()
            .await
            .expect("GET an asset");
        assert_eq!(response.status(), StatusCode::OK, "{file}");
        assert_eq!(response.headers()["content-type"], content_type, "{file}");
        assert_eq!(response.headers()["x-content-type-options"], "nosniff");
    }
    let missing = client
        .get(monitor.url("/ui/secrets.json"))
        .send()
        .await
        .expect("GET a missing asset");
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);
    assert_eq!(
        missing.headers()["content-type"],
        "application/problem+json"
    );

    // What the console reads stays behind the key.
    for route in ["/processes", "/operations", "/egress", "/info"] {
        let response = client
            .get(monitor.url(route))
            .send()
            .await
            .expect("GET a route");
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "{route}");
    }
}

#[tokio::test]
async fn egress_lists_the_configured_providers_and_openapi_describes_it() {
    let traces = tempfile::tempdir().expect("a folder");
    let monitor = Monitor::start(
        &format!(
            "[egress.providers.artifacts]\ncomponent = \"filesystem\"\ndirectory = {:?}\n",
            traces.path().display().to_string()
        ),
        &["--no-auth"],
    );
    let providers: Value = get_json(&reqwest::Client::new(), monitor.url("/egress")).await;
    assert_eq!(
        providers,
        json!([{"name": "artifacts", "component": "filesystem"}])
    );
    let description: Value = get_json(&reqwest::Client::new(), monitor.url("/openapi.json")).await;
    assert!(
        description["paths"]["/egress"]["get"].is_object(),
        "{}",
        description["paths"]
    );
}

/// The live-metrics table's rows: counter name to the value shown.
const LIVE_ROWS: &str = "const rows = {};
     for (const row of document.querySelectorAll('#livemetrics tbody tr')) {
         rows[row.dataset.counter] = row.cells[2].textContent;
     }
     return rows;";

#[tokio::test]
async fn live_metrics_show_the_runtime_counters_as_they_arrive_and_can_be_stopped() {
    let target = TestTarget::start(Program::Worker, &[]);
    let monitor = monitor_for(&target, "", &["--no-auth"]);
    let browser = Browser::start(1280, 1000).await;
    browser.goto(&monitor.url("/ui")).await;
    select_process(&browser, target.pid()).await;

    // The API's error lands beside the live-metrics duration, not the trace's.
    browser.type_into("#livemetrics-duration", "soon").await;
    browser.click("#livemetrics-form button[type=submit]").await;
    let error = browser
        .wait_until(
            "the duration error",
            DEFAULT_WAIT,
            "const field = document.getElementById('livemetrics-duration');
             return field.getAttribute('aria-invalid') === 'true'
                 ? document.getElementById('livemetrics-duration-error').textContent : null;",
        )
        .await;
    assert!(
        error.as_str().is_some_and(|text| !text.is_empty()),
        "{error}"
    );
    let trace_field_marked = browser
        .eval(
            "return document.getElementById('duration').hasAttribute('aria-invalid')",
            Vec::new(),
        )
        .await;
    assert_eq!(trace_field_marked, json!(false));

    // Six seconds of counters (reports come every second; a loaded machine may delay the first
    // few): the runtime's own appear with numbers, then the stream ends.
    browser.type_into("#livemetrics-duration", "6").await;
    browser.click("#livemetrics-form button[type=submit]").await;
    let finished = browser
        .wait_until(
            "live metrics to finish",
            Duration::from_secs(30),
            &format!(
                "return document.getElementById('livemetrics-status').textContent.startsWith('Finished')
                    ? (() => {{ {LIVE_ROWS} }})() : null;"
            ),
        )
        .await;
    for counter in ["cpu-usage", "working-set", "threadpool-thread-count"] {
        let shown = finished[counter].as_str().unwrap_or_default();
        assert!(shown.parse::<f64>().is_ok(), "{counter}: {finished}");
    }
    browser.screenshot("live-metrics").await;
    let done = newest_operation(&browser, "Succeeded", false, Duration::from_secs(10)).await;
    let operation: Value = get_json(
        &reqwest::Client::new(),
        monitor.url(&format!(
            "/operations/{}",
            done["id"].as_str().expect("an operation id")
        )),
    )
    .await;
    assert_eq!(operation["kind"], "metrics", "{operation}");

    // Watching without end, then Stop: the stream ends and so does its operation.
    browser.type_into("#livemetrics-duration", "-1").await;
    browser.click("#livemetrics-form button[type=submit]").await;
    browser
        .wait_until(
            "a first counter",
            Duration::from_secs(30),
            "return (!document.getElementById('livemetrics-stop').hidden
                 && document.querySelectorAll('#livemetrics tbody tr').length > 0) || null",
        )
        .await;
    browser.click("#livemetrics-stop").await;
    browser
        .wait_until(
            "the stream to stop",
            DEFAULT_WAIT,
            "return document.getElementById('livemetrics-status').textContent === 'Stopped.' || null",
        )
        .await;
    let ended = browser
        .wait_until(
            "the operation to end",
            Duration::from_secs(30),
            "const card = document.querySelector('#operations .operation');
             return card && ['Succeeded', 'Cancelled', 'Failed'].includes(card.dataset.status)
                 ? card.dataset.status : null;",
        )
        .await;
    assert_eq!(ended, json!("Cancelled"));
    browser.close().await;
}
