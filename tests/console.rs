//! End-to-end: `kubectl apikey console` in a real headless browser (Debian's Chromium and
//! chromedriver), against the local control plane, with an operator of its own per namespace.
//! Screenshots of the main states go to target/console-screenshots/ (CI keeps target/).

mod common;

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::{TcpListener, TcpStream};
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use fantoccini::key::Key;
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
/// How long the page may take to show what the cluster did (the operator's work included).
const PATIENCE: Duration = Duration::from_secs(60);

/// The plugin binary this checkout builds.
fn plugin_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_kubectl-apikey"))
}

/// `kubectl-apikey console` as a child process, with the URL it printed.
struct Console {
    _child: KillOnDrop,
    _stdout: BufReader<ChildStdout>,
    url: String,
    port: u16,
}

impl Console {
    /// The one-time token of the URL's fragment.
    fn token(&self) -> &str {
        self.url.split_once("#token=").expect("a token").1
    }

    /// `Origin: http://127.0.0.1:PORT`, the console's own.
    fn origin(&self) -> String {
        format!("Origin: http://127.0.0.1:{}\r\n", self.port)
    }

    /// Redeems the URL's token as the page does: (status code, head, body).
    fn redeem(&self, token: &str) -> (u16, String, String) {
        let body = json!({ "token": token }).to_string();
        post(self.port, "/api/session", &body, &self.origin())
    }
}

/// `Authorization: Bearer SECRET`.
fn bearer(secret: &str) -> String {
    format!("Authorization: Bearer {secret}\r\n")
}

impl Console {
    fn start(kubeconfig: &Path, namespace: &str) -> Self {
        let log = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("console-{namespace}.log"));
        let mut child = Command::new(plugin_bin())
            .args(["console", "--kubeconfig"])
            .arg(kubeconfig)
            .args(["-n", namespace, "--port", "0"])
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).expect("console log"))
            .spawn()
            .expect("kubectl-apikey starts");
        let mut stdout = BufReader::new(child.stdout.take().expect("stdout"));
        let child = KillOnDrop(child);
        let mut line = String::new();
        stdout
            .read_line(&mut line)
            .expect("the console's first line");
        let url = line
            .strip_prefix("Console: ")
            .map(|u| u.trim().to_owned())
            .unwrap_or_else(|| {
                panic!(
                    "expected `Console: URL`, got {line:?}; stderr: {}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                )
            });
        let port = url
            .strip_prefix("http://127.0.0.1:")
            .and_then(|rest| rest.split(['/', '#']).next())
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("a 127.0.0.1 URL with a port: {url}"));
        assert!(
            url.starts_with(&format!("http://127.0.0.1:{port}/#token=")) && url.len() > 70,
            "a random token in the fragment: {url}"
        );
        Self {
            _child: child,
            _stdout: stdout,
            url,
            port,
        }
    }
}

/// chromedriver on a free port, in a process group of its own with the Chromium it starts, and a
/// headless Chromium session through it. Dropped, it ends that process group (SIGTERM, then
/// SIGKILL), so that a failed test leaves no browser behind.
struct Browser {
    client: Client,
    driver: Child,
    port: u16,
}

impl Drop for Browser {
    fn drop(&mut self) {
        let group = format!("-{}", self.driver.id());
        let signal = |name: &str| {
            let _ = Command::new("kill")
                .args([name, "--", &group])
                .stderr(Stdio::null())
                .status();
        };
        signal("-TERM");
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline && matches!(self.driver.try_wait(), Ok(None)) {
            std::thread::sleep(Duration::from_millis(50));
        }
        signal("-KILL");
        let _ = self.driver.wait();
    }
}

impl Browser {
    async fn start(name: &str) -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let log = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("chromedriver-{name}.log"));
        let driver = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .process_group(0)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("chromedriver log"))
            .spawn()
            .expect("chromedriver starts (Debian package chromium-driver)");
        eventually("chromedriver to listen", Duration::from_secs(20), || {
            TcpStream::connect(("127.0.0.1", port)).ok()
        });
        let capabilities = json!({"goog:chromeOptions": {
            "binary": CHROMIUM,
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1280,800"],
        }, "goog:loggingPrefs": {"browser": "ALL"}});
        let client = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(capabilities.as_object().expect("an object").clone())
            .connect(&format!("http://127.0.0.1:{port}"))
            .await;
        let client = match client {
            Ok(client) => client,
            Err(e) => {
                // end chromedriver's process group before failing
                let _ = Command::new("kill")
                    .args(["-KILL", "--", &format!("-{}", driver.id())])
                    .status();
                panic!("a Chromium session: {e}");
            }
        };
        Self {
            client,
            driver,
            port,
        }
    }

    /// The browser's console messages since the last call (chromedriver's log endpoint):
    /// script errors and Content-Security-Policy violations show there.
    async fn console_log(&self) -> Vec<Value> {
        let session = self.client.session_id().await.unwrap().expect("a session");
        let body = r#"{"type":"browser"}"#;
        let (code, _, response) = http(
            self.port,
            &format!(
                "POST /session/{session}/se/log HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                self.port,
                body.len()
            ),
        );
        assert_eq!(code, 200, "{response}");
        let response: Value = serde_json::from_str(&response).expect("JSON");
        response["value"].as_array().cloned().unwrap_or_default()
    }
}

fn screenshots() -> PathBuf {
    let target = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .expect("the target directory");
    let dir = target.join("console-screenshots");
    std::fs::create_dir_all(&dir).expect("screenshot directory");
    dir
}

async fn screenshot(c: &Client, name: &str) {
    let png = c.screenshot().await.expect("screenshot");
    std::fs::write(screenshots().join(format!("{name}.png")), png).expect("write screenshot");
}

/// Polls `script` (a function body returning a value) until it returns something truthy.
async fn until(c: &Client, what: &str, script: &str) -> Value {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let value = c.execute(script, vec![]).await.expect("script runs");
        let truthy = match &value {
            Value::Null => false,
            Value::Bool(b) => *b,
            Value::String(s) => !s.is_empty(),
            _ => true,
        };
        if truthy {
            return value;
        }
        if Instant::now() >= deadline {
            screenshot(c, "failed").await;
            let page = c
                .execute("return document.body.innerText;", vec![])
                .await
                .unwrap_or_default();
            panic!("timed out after {PATIENCE:?} waiting for {what}; the page says: {page}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn by(testid: &str) -> String {
    format!("[data-testid=\"{testid}\"]")
}

async fn text(c: &Client, testid: &str) -> String {
    let script = format!(
        "const e = document.querySelector('{}'); return e ? e.textContent : null;",
        by(testid)
    );
    c.execute(&script, vec![])
        .await
        .expect("script runs")
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

/// Waits until the element `testid` has text containing `part`.
async fn until_text(c: &Client, testid: &str, part: &str) -> String {
    let script = format!(
        "const e = document.querySelector('{}'); return e && e.textContent.includes({}) ? e.textContent : null;",
        by(testid),
        json!(part)
    );
    until(c, &format!("{testid} to show {part:?}"), &script)
        .await
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

async fn click(c: &Client, testid: &str) {
    c.wait()
        .at_most(PATIENCE)
        .for_element(Locator::Css(&by(testid)))
        .await
        .unwrap_or_else(|e| panic!("{testid}: {e}"))
        .click()
        .await
        .unwrap_or_else(|e| panic!("click {testid}: {e}"));
}

/// Sets the filter fields and applies them.
async fn filter(c: &Client, namespace: &str, selector: &str) {
    c.execute(
        "document.getElementById('filter-namespace').value = arguments[0];\
         document.getElementById('filter-selector').value = arguments[1];",
        vec![json!(namespace), json!(selector)],
    )
    .await
    .expect("script runs");
    click(c, "filter-apply").await;
}

/// Waits until the element `testid` has the keyboard focus.
async fn until_focused(c: &Client, testid: &str) {
    until(
        c,
        &format!("{testid} to have focus"),
        &format!(
            "return document.activeElement === document.querySelector('{}');",
            by(testid)
        ),
    )
    .await;
}

/// Whether the page shows a watch error alone: no count in the status line, no "No API keys.",
/// no rows.
async fn error_alone(c: &Client) -> bool {
    c.execute(
        "return document.getElementById('watch-error').textContent !== ''\
         && document.getElementById('status').textContent === ''\
         && document.getElementById('empty').hidden\
         && document.getElementById('rows').children.length === 0;",
        vec![],
    )
    .await
    .expect("script runs")
        == Value::Bool(true)
}

/// Presses `key` in the element that has the focus, as a keyboard user does.
async fn press(c: &Client, key: Key) {
    c.active_element()
        .await
        .unwrap()
        .send_keys(&key.to_string())
        .await
        .unwrap();
}

async fn dialog_open(c: &Client, id: &str) -> bool {
    c.execute(
        &format!("return document.getElementById('{id}').open;"),
        vec![],
    )
    .await
    .expect("script runs")
        == Value::Bool(true)
}

/// A raw HTTP/1.1 exchange with the console; returns (status code, head, body).
fn http(port: u16, request: &str) -> (u16, String, String) {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    stream.write_all(request.as_bytes()).expect("send");
    let mut reader = BufReader::new(stream);
    let mut head = String::new();
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).expect("read the head");
        if line == "\r\n" || line.is_empty() {
            break;
        }
        head.push_str(&line);
    }
    let length = head.lines().find_map(|l| {
        let (name, value) = l.split_once(':')?;
        name.eq_ignore_ascii_case("content-length")
            .then(|| value.trim().parse::<usize>().ok())?
    });
    let mut body = Vec::new();
    match length {
        Some(n) => {
            body.resize(n, 0);
            reader.read_exact(&mut body).expect("read the body");
        }
        None => {
            reader.read_to_end(&mut body).expect("read the body");
        }
    }
    let code = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .expect("a status code");
    (code, head, String::from_utf8_lossy(&body).into_owned())
}

fn get(port: u16, path: &str, extra: &str) -> (u16, String, String) {
    http(
        port,
        &format!(
            "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n{extra}Connection: close\r\n\r\n"
        ),
    )
}

fn post(port: u16, path: &str, body: &str, extra: &str) -> (u16, String, String) {
    http(
        port,
        &format!(
            "POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n{extra}Connection: close\r\n\r\n{body}",
            body.len()
        ),
    )
}

/// The head and body of a response the console sent must not set a cookie, nor allow another
/// origin.
fn no_cookie_no_cors(head: &str) {
    let head = head.to_ascii_lowercase();
    assert!(!head.contains("set-cookie"), "{head}");
    assert!(!head.contains("access-control-"), "{head}");
}

/// A web server of another local user: on another port of 127.0.0.1, it records the head of
/// every request it gets, and serves at `/` a page that fetches `/probe` from itself (the
/// reviewer's attack: a browser sends 127.0.0.1's cookies to every port) after trying to read
/// the console's API across origins and its own `sessionStorage`.
struct Neighbour {
    port: u16,
    heads: Arc<Mutex<Vec<String>>>,
}

impl Neighbour {
    fn start(console_port: u16) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("a free port");
        let port = listener.local_addr().expect("its address").port();
        let heads = Arc::new(Mutex::new(Vec::new()));
        let page = format!(
            "<!doctype html><title>neighbour</title><script>(async () => {{\n\
             let console = 'blocked';\n\
             try {{ await fetch('http://127.0.0.1:{console_port}/api/context', {{credentials: 'include'}}); console = 'read'; }} catch {{}}\n\
             await fetch('/probe?storage=' + sessionStorage.length + '&console=' + console, {{credentials: 'include'}});\n\
             document.title = 'done';\n\
             }})();</script>"
        );
        let recorded = heads.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                let mut reader = BufReader::new(stream);
                let mut head = String::new();
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                        break;
                    }
                    head.push_str(&line);
                }
                let body = if head.starts_with("GET / ") {
                    page.as_str()
                } else {
                    ""
                };
                recorded.lock().expect("the record").push(head);
                let _ = write!(
                    reader.get_mut(),
                    "HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
            }
        });
        Self { port, heads }
    }

    fn heads(&self) -> Vec<String> {
        self.heads.lock().expect("the record").clone()
    }
}

/// An annotation of Secret `name` (metadata only: never its data).
fn secret_annotation(ns: &TempNamespace, name: &str, annotation: &str) -> String {
    let path = format!(
        "{{.metadata.annotations.{}}}",
        annotation.replace('.', "\\.")
    );
    ns.jsonpath(&format!("secret/{name}"), &path)
}

fn exists(ns: &TempNamespace, what: &str) -> bool {
    !ns.ok(&["get", what, "--ignore-not-found", "-o", "name"])
        .trim()
        .is_empty()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_creates_regenerates_and_deletes_keys_in_a_browser() {
    install_crd();
    let ns = TempNamespace::new("console");
    let _operator = Operator::start(&ns.name);
    let console = Console::start(&kubeconfig(), &ns.name);
    let port = console.port;
    let n = ns.name.as_str();

    // The page's files for anyone who reaches the port (nothing secret in them), with the
    // security headers; the API not without the session's bearer, nor with a wrong one.
    for path in ["/", "/console.js", "/console.css", "/icon.svg"] {
        let (code, head, _) = get(port, path, "");
        assert_eq!(code, 200, "{path}");
        assert!(head.contains("no-store") && head.contains("frame-ancestors 'none'"));
        assert!(head.contains("nosniff") && head.contains("no-referrer"));
        no_cookie_no_cors(&head);
    }
    for path in ["/api/events", "/api/context"] {
        for auth in [String::new(), bearer("wrong"), bearer(console.token())] {
            let (code, head, body) = get(port, path, &auth);
            assert_eq!(code, 401, "{path} with {auth:?}: {body}");
            let error: Value = serde_json::from_str(&body).expect("a JSON error");
            assert!(
                error["error"]
                    .as_str()
                    .unwrap()
                    .contains("session has ended")
            );
            no_cookie_no_cors(&head);
        }
    }

    let browser = Browser::start(n).await;
    let c = &browser.client;
    c.goto(&console.url).await.expect("open the console");
    until_text(c, "status", "0 keys").await;
    assert_eq!(text(c, "context").await, format!("Namespace {n}"));
    // The token left the address bar; no cookie was set; the session is in this tab's storage.
    let here = c.current_url().await.expect("url");
    assert_eq!(here.as_str(), format!("http://127.0.0.1:{port}/"));
    assert!(c.get_all_cookies().await.unwrap().is_empty(), "no cookies");
    let secret = c
        .execute(
            "return sessionStorage.getItem('apikey-console-session');",
            vec![],
        )
        .await
        .unwrap();
    let secret = secret
        .as_str()
        .expect("a session in sessionStorage")
        .to_owned();
    assert_eq!(secret.len(), 43);
    screenshot(c, "01-empty").await;

    // A second redemption of the link is refused, in the words a wrong token gets.
    let (code, used_head, used) = console.redeem(console.token());
    assert_eq!(code, 403);
    assert!(used.contains("not valid or was already used"), "{used}");
    let (code, _, wrong) = console.redeem("wrong");
    assert_eq!((code, &wrong), (403, &used), "one message for both");
    no_cookie_no_cors(&used_head);

    // The reviewer's attack: a page on another port of 127.0.0.1, in the same browser, fetches
    // from itself. Nothing the console issued reaches it: no cookie, no token, no session.
    let neighbour = Neighbour::start(port);
    c.goto(&format!("http://127.0.0.1:{}/", neighbour.port))
        .await
        .expect("open the neighbour's page");
    until(
        c,
        "the neighbour's page to run",
        "return document.title === 'done';",
    )
    .await;
    let heads = neighbour.heads();
    let probe = heads
        .iter()
        .find(|h| h.starts_with("GET /probe"))
        .unwrap_or_else(|| panic!("the probe: {heads:#?}"));
    assert!(
        probe.contains("storage=0&console=blocked"),
        "nothing to read across origins: {probe}"
    );
    for head in &heads {
        assert!(!head.to_ascii_lowercase().contains("\ncookie:"), "{head}");
        assert!(
            !head.contains(&secret) && !head.contains(console.token()),
            "{head}"
        );
    }
    let _ = browser.console_log().await; // the refused cross-origin read is logged: not ours
    // Back at the console without the token: the tab's session goes on.
    c.goto(&format!("http://127.0.0.1:{port}/")).await.unwrap();
    until_text(c, "status", "0 keys").await;
    // Another tab has no session: the page says so.
    let first = c.window().await.unwrap();
    let other = c.new_window(true).await.unwrap();
    c.switch_to_window(other.handle).await.unwrap();
    c.goto(&format!("http://127.0.0.1:{port}/")).await.unwrap();
    let ended = until_text(c, "ended", "session has ended").await;
    assert!(ended.contains("kubectl apikey console"), "{ended}");
    c.close_window().await.unwrap();
    c.switch_to_window(first).await.unwrap();

    // Create a key through the dialog.
    click(c, "create-button").await;
    assert!(dialog_open(c, "create-dialog").await);
    let name_field = c.find(Locator::Css(&by("create-name"))).await.unwrap();
    name_field.send_keys("alpha").await.unwrap();
    let user_field = c.find(Locator::Css(&by("create-user"))).await.unwrap();
    user_field.send_keys("alice").await.unwrap();
    screenshot(c, "02-create-dialog").await;
    click(c, "create-submit").await;
    until_text(c, &format!("ready-{n}/alpha"), "True").await;
    assert!(!dialog_open(c, "create-dialog").await);

    // Three more, made with kubectl: the table is live. delta's user is alpha's: not Ready.
    ns.apply(
        &[
            key_yaml("beta", "bob", "team: ops", None, None),
            key_yaml("gamma", "carol", "team: web", None, None),
            key_yaml("delta", "alice", "", None, None),
        ]
        .concat(),
    );
    wait_ready(&ns, &["alpha", "beta", "gamma"]);
    until_text(c, &format!("ready-{n}/beta"), "True").await;
    until_text(c, &format!("ready-{n}/gamma"), "True").await;
    until_text(c, &format!("ready-{n}/delta"), "False (DuplicateUser)").await;
    assert_eq!(text(c, &format!("labels-{n}/beta")).await, "team=ops");
    assert_eq!(text(c, &format!("labels-{n}/alpha")).await, "");
    let gamma_generation = secret_annotation(&ns, "gamma", "apikey.dev/generation");
    assert_eq!(gamma_generation, "1");
    screenshot(c, "03-three-keys").await;

    // The filters. An empty namespace is the console's own: the field says which (all
    // namespaces need -A). The header names the namespace the table shows. A selector the API
    // server refuses shows its error alone, not "0 keys".
    filter(c, "", "").await;
    until_text(c, "status", "4 keys").await;
    let field = c
        .execute(
            "const f = document.getElementById('filter-namespace'); return [f.value, f.placeholder];",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(field[0], json!(n), "the field shows the namespace shown");
    assert!(
        field[1].as_str().unwrap().contains("start with -A"),
        "{field}"
    );
    filter(c, "kube-system", "").await;
    until_text(c, "context", "Namespace kube-system").await;
    until_text(c, "status", "0 keys").await;
    filter(c, n, "team in (").await;
    until(c, "the selector's error alone", "return document.getElementById('watch-error').textContent !== '' && document.getElementById('rows').children.length === 0;").await;
    assert!(error_alone(c).await, "{}", text(c, "alert").await);
    assert_eq!(text(c, "context").await, format!("Namespace {n}"));
    filter(c, n, "").await;
    until_text(c, "status", "4 keys").await;
    assert_eq!(text(c, "alert").await, "");

    // Select two of three with their checkboxes; bulk-regenerate them after the confirmation.
    click(c, &format!("select-{n}/alpha")).await;
    click(c, &format!("select-{n}/beta")).await;
    assert_eq!(text(c, "bulk-button").await, "2 selected");
    let picker = c
        .execute(
            "const p = document.getElementById('select-all'); return [p.checked, p.indeterminate];",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(picker, json!([false, true]), "the top picker is partly set");
    click(c, "bulk-button").await;
    until_focused(c, "bulk-regenerate").await; // the row menu's order: Regenerate, then Delete
    click(c, "bulk-regenerate").await;
    assert!(dialog_open(c, "confirm-dialog").await);
    let listed = text(c, "confirm-keys").await;
    assert!(
        listed.contains(&format!("{n}/alpha"))
            && listed.contains(&format!("{n}/beta"))
            && !listed.contains("gamma"),
        "{listed}"
    );
    assert_eq!(text(c, "confirm-button").await, "Confirm");
    assert_eq!(text(c, "confirm-note").await, "", "both are Ready");
    screenshot(c, "04-confirm-regenerate").await;
    click(c, "confirm-button").await;
    until_focused(c, "select-all").await;
    until_text(c, &format!("state-{n}/alpha"), "rotated (generation 2)").await;
    until_text(c, &format!("state-{n}/beta"), "rotated (generation 2)").await;
    let rotated = text(c, &format!("state-{n}/alpha")).await;
    let clock = rotated
        .strip_prefix("rotated (generation 2) at ")
        .unwrap_or_else(|| panic!("{rotated}"));
    assert!(
        clock.len() == 8 && clock.chars().filter(|&ch| ch == ':').count() == 2,
        "HH:MM:SS: {rotated}"
    );
    assert_eq!(text(c, &format!("state-{n}/gamma")).await, "");
    assert_eq!(text(c, "alert").await, "");

    // A key that is not Ready is flagged before it is regenerated, and fails with its reason.
    click(c, &format!("actions-{n}/delta")).await;
    click(c, &format!("regenerate-{n}/delta")).await;
    assert!(dialog_open(c, "confirm-dialog").await);
    let listed = text(c, "confirm-keys").await;
    assert!(
        listed.contains(&format!("{n}/delta (alice) — not Ready: DuplicateUser")),
        "{listed}"
    );
    let note = text(c, "confirm-note").await;
    assert!(
        note.contains("will not rotate until that is fixed"),
        "{note}"
    );
    screenshot(c, "04b-confirm-not-ready").await;
    click(c, "confirm-button").await;
    until_text(c, &format!("state-{n}/delta"), "failed: DuplicateUser — ").await;
    screenshot(c, "05-rotated").await;

    // The cluster agrees: exactly those two Secrets answer one request; gamma's is untouched.
    let answered = secret_annotation(&ns, "alpha", "apikey.dev/handled-regenerate");
    assert!(!answered.is_empty());
    assert_eq!(
        secret_annotation(&ns, "beta", "apikey.dev/handled-regenerate"),
        answered
    );
    assert_eq!(
        secret_annotation(&ns, "gamma", "apikey.dev/generation"),
        gamma_generation
    );
    assert_eq!(
        secret_annotation(&ns, "gamma", "apikey.dev/handled-regenerate"),
        ""
    );

    // A phone-sized window: nothing overflows sideways.
    c.set_window_rect(0, 0, 390, 844).await.unwrap();
    let widths = until(
        c,
        "a phone-sized viewport",
        "return window.innerWidth <= 400 ? [document.documentElement.scrollWidth, window.innerWidth] : null;",
    )
    .await;
    assert!(
        widths[0].as_u64() <= widths[1].as_u64(),
        "horizontal overflow on a phone: {widths}"
    );
    screenshot(c, "06-phone").await;
    c.set_window_rect(0, 0, 1280, 800).await.unwrap();
    let widths = c
        .execute(
            "return [document.documentElement.scrollWidth, window.innerWidth];",
            vec![],
        )
        .await
        .unwrap();
    assert!(
        widths[0].as_u64() <= widths[1].as_u64(),
        "horizontal overflow at 1280x800: {widths}"
    );
    let lines = c
        .execute(
            &format!(
                "const r = document.createRange(); r.selectNodeContents(document.querySelector('{}').cells[2]); return r.getClientRects().length;",
                by(&format!("row-{n}/delta"))
            ),
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(lines, json!(1), "the namespace on one line at 1280x800");

    // Bulk delete two, after the confirmation.
    click(c, &format!("select-{n}/alpha")).await;
    click(c, &format!("select-{n}/beta")).await;
    click(c, "bulk-button").await;
    until_focused(c, "bulk-regenerate").await;
    click(c, "bulk-delete").await;
    assert!(dialog_open(c, "confirm-dialog").await);
    assert_eq!(text(c, "confirm-button").await, "Delete");
    assert_eq!(text(c, "confirm-note").await, "");
    screenshot(c, "07-confirm-delete").await;
    click(c, "confirm-button").await;
    until(
        c,
        "alpha and beta to leave the table",
        &format!(
            "return !document.querySelector('{}') && !document.querySelector('{}') && !!document.querySelector('{}');",
            by(&format!("row-{n}/alpha")),
            by(&format!("row-{n}/beta")),
            by(&format!("row-{n}/gamma")),
        ),
    )
    .await;
    until_focused(c, "select-all").await;
    screenshot(c, "08-deleted").await;
    eventually(
        "alpha and beta and their Secrets to be gone",
        PATIENCE,
        || {
            ["apikey/alpha", "apikey/beta", "secret/alpha", "secret/beta"]
                .iter()
                .all(|w| !exists(&ns, w))
                .then_some(())
        },
    );
    assert!(exists(&ns, "apikey/gamma") && exists(&ns, "secret/gamma"));

    // A key held by a finalizer shows as deleting; once it is gone, focus moves from its row to
    // the next row's actions.
    ns.ok(&[
        "patch",
        "apikey/delta",
        "--type=merge",
        "-p",
        r#"{"metadata":{"finalizers":["example.com/hold"]}}"#,
    ]);
    click(c, &format!("actions-{n}/delta")).await;
    click(c, &format!("delete-{n}/delta")).await;
    click(c, "confirm-button").await;
    until_text(c, &format!("state-{n}/delta"), "deleting…").await;
    until_focused(c, &format!("actions-{n}/delta")).await;
    ns.ok(&[
        "patch",
        "apikey/delta",
        "--type=json",
        "-p",
        r#"[{"op":"remove","path":"/metadata/finalizers"}]"#,
    ]);
    until_focused(c, &format!("actions-{n}/gamma")).await;
    assert!(!exists(&ns, "apikey/delta"));

    // With the session: another Host, or a POST from another site, is refused; the console's
    // own origin is not. Without the session, the console's own origin is not enough. No CORS
    // headers, no cookies, ever.
    let with_session = bearer(&secret);
    let (code, head, _) = get(port, "/api/context", &with_session);
    assert_eq!(code, 200);
    assert!(head.contains("default-src 'self'") && head.contains("nosniff"));
    no_cookie_no_cors(&head);
    let (code, _, _) = http(
        port,
        &format!(
            "GET /api/context HTTP/1.1\r\nHost: rebind.example:{port}\r\n{with_session}Connection: close\r\n\r\n"
        ),
    );
    assert_eq!(code, 403, "a foreign Host");
    let body = format!(r#"{{"keys":[{{"namespace":"{n}","name":"gamma","uid":"x"}}]}}"#);
    let (code, head, _) = post(
        port,
        "/api/delete",
        &body,
        &format!("{with_session}Origin: http://evil.example\r\n"),
    );
    assert_eq!(code, 403, "a foreign Origin");
    no_cookie_no_cors(&head);
    let (code, _, _) = post(port, "/api/delete", &body, &with_session);
    assert_eq!(code, 403, "no Origin on a POST");
    let (code, _, _) = post(port, "/api/delete", &body, &console.origin());
    assert_eq!(code, 401, "no session");
    assert!(
        exists(&ns, "apikey/gamma"),
        "no refused request touched gamma"
    );
    let (code, head, body) = post(
        port,
        "/api/regenerate",
        r#"{"keys":[]}"#,
        &format!("{with_session}{}", console.origin()),
    );
    assert_eq!(code, 422, "the console's own origin gets through: {body}");
    no_cookie_no_cors(&head);
    // The token's redemption: only from the console's own origin, at its own address.
    let token = json!({ "token": console.token() }).to_string();
    let (code, _, _) = post(
        port,
        "/api/session",
        &token,
        "Origin: http://evil.example\r\n",
    );
    assert_eq!(code, 403, "a redemption from a foreign Origin");
    let (code, _, _) = post(port, "/api/session", &token, "");
    assert_eq!(code, 403, "a redemption without Origin");
    let (code, _, _) = http(
        port,
        &format!(
            "POST /api/session HTTP/1.1\r\nHost: rebind.example:{port}\r\n{}Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{token}",
            console.origin(),
            token.len()
        ),
    );
    assert_eq!(code, 403, "a redemption at a foreign Host");

    // No script error, no Content-Security-Policy violation, no failed request.
    let log = browser.console_log().await;
    let severe: Vec<_> = log.iter().filter(|e| e["level"] == "SEVERE").collect();
    assert!(severe.is_empty(), "the browser's console: {severe:#?}");
    c.clone().close().await.expect("end the session");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_caller_whose_rbac_forbids_delete_reads_the_api_servers_refusal() {
    install_crd();
    let ns = TempNamespace::new("console-rbac");
    let n = ns.name.as_str();
    ns.apply(&format!(
        "apiVersion: v1\nkind: ServiceAccount\nmetadata: {{name: key-editor}}\n---\n\
         apiVersion: rbac.authorization.k8s.io/v1\nkind: Role\nmetadata: {{name: key-editor}}\nrules:\n\
         - {{apiGroups: [apikey.dev], resources: [apikeys], verbs: [get, list, watch, create, patch]}}\n\
         - {{apiGroups: [\"\"], resources: [secrets], verbs: [get, list, watch]}}\n---\n\
         apiVersion: rbac.authorization.k8s.io/v1\nkind: RoleBinding\nmetadata: {{name: key-editor}}\n\
         roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: Role, name: key-editor}}\n\
         subjects: [{{kind: ServiceAccount, name: key-editor, namespace: {n}}}]\n"
    ));
    ns.apply(&key_yaml("k", "kim", "", None, None));
    let kubeconfig = service_account_kubeconfig_for(n, "key-editor");
    let console = Console::start(&kubeconfig, n);
    let browser = Browser::start(n).await;
    let c = &browser.client;
    c.goto(&console.url).await.expect("open the console");
    until_text(c, &format!("row-{n}/k"), "kim").await;

    // With the keyboard: the row's actions menu, Delete, then Esc cancels the confirmation and
    // focus returns to the menu's button.
    let actions = by(&format!("actions-{n}/k"));
    let keyboard_delete = || async {
        c.execute(
            &format!("document.querySelector('{actions}').focus();"),
            vec![],
        )
        .await
        .unwrap();
        press(c, Key::Enter).await;
        until(
            c,
            "the menu's first item to have focus",
            "return document.activeElement.textContent === 'Regenerate Client Secret';",
        )
        .await;
        press(c, Key::Down).await;
        press(c, Key::Enter).await;
        assert!(dialog_open(c, "confirm-dialog").await);
    };
    keyboard_delete().await;
    let listed = text(c, "confirm-keys").await;
    assert!(
        listed.contains("— no status yet: is an operator watching this namespace?"),
        "no operator here: {listed}"
    );
    press(c, Key::Escape).await;
    until(
        c,
        "Esc to close the dialog and give focus back",
        &format!(
            "return !document.getElementById('confirm-dialog').open && document.activeElement === document.querySelector('{actions}');"
        ),
    )
    .await;

    // Again, confirmed (Cancel has the focus first: Tab to Delete): the API server refuses.
    keyboard_delete().await;
    assert_eq!(
        c.execute("return document.activeElement.textContent;", vec![])
            .await
            .unwrap(),
        json!("Cancel")
    );
    let active = c.active_element().await.unwrap();
    active.send_keys(&Key::Tab.to_string()).await.unwrap();
    press(c, Key::Enter).await;
    let alert = until_text(c, "alert", "forbidden").await;
    assert!(
        alert.contains(&format!("{n}/k: ")) && alert.contains("cannot delete resource \"apikeys\""),
        "the API server's message verbatim: {alert}"
    );
    screenshot(c, "09-rbac-forbidden").await;
    assert!(exists(&ns, "apikey/k"));

    // A namespace the caller may not list: the API server's refusal alone, not "0 keys".
    filter(c, "default", "").await;
    until_text(c, "alert", "cannot list resource \"apikeys\"").await;
    until(
        c,
        "the refusal alone",
        "return document.getElementById('rows').children.length === 0;",
    )
    .await;
    assert!(error_alone(c).await, "{}", text(c, "alert").await);
    assert_eq!(text(c, "context").await, "Namespace default");
    screenshot(c, "10-namespace-forbidden").await;

    // The console stops: after about 10 s of failed reconnects the page says so.
    let stopped = Instant::now();
    drop(console);
    until_text(c, "alert", "The console is not answering").await;
    let waited = stopped.elapsed();
    assert!(waited >= Duration::from_secs(9), "{waited:?}");
    println!("the page said the console is not answering after {waited:?}");
    screenshot(c, "11-not-answering").await;
    c.clone().close().await.expect("end the session");
}

/// An event stream opened raw and held open: the status code of its answer (the body of a 429).
fn open_stream(port: u16, secret: &str) -> (u16, String, TcpStream) {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    write!(
        stream,
        "GET /api/events HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n{}\r\n",
        bearer(secret)
    )
    .expect("send");
    let mut reader = BufReader::new(stream.try_clone().expect("a second handle"));
    let mut status = String::new();
    reader.read_line(&mut status).expect("the status line");
    let code = status
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .expect("a status code");
    let mut rest = String::new();
    if code != 200 {
        let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
        let _ = reader.read_to_string(&mut rest);
    }
    (code, rest, stream)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_refuses_bad_names_stale_uids_and_too_many_streams() {
    install_crd();
    let ns = TempNamespace::new("console-limits");
    let n = ns.name.as_str();

    // Port 80 is refused at start: browsers leave it out of Host and Origin.
    let out = Command::new(plugin_bin())
        .args(["console", "--kubeconfig"])
        .arg(kubeconfig())
        .args(["-n", n, "--port", "80"])
        .output()
        .expect("kubectl-apikey runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && stderr.contains("port 80"),
        "{stderr}"
    );

    let console = Console::start(&kubeconfig(), n);
    let port = console.port;
    let (code, head, body) = console.redeem(console.token());
    assert_eq!(code, 200, "{body}");
    no_cookie_no_cors(&head);
    let granted: Value = serde_json::from_str(&body).expect("JSON");
    let secret = granted["session"].as_str().expect("a session secret");
    assert_eq!(secret.len(), 43);
    assert_ne!(secret, console.token());
    let auth = format!("{}{}", bearer(secret), console.origin());
    let act =
        |path: &str, keys: Value| post(port, path, &json!({ "keys": keys }).to_string(), &auth);

    // Names and namespaces that are not are refused before any API call (the reviewer's
    // repros: another API path, a subresource, a LIST).
    ns.apply(&key_yaml("htmlkey", "hank", "", None, None));
    let uid = ns.jsonpath("apikey/htmlkey", "{.metadata.uid}");
    let (code, _, body) = get(port, "/api/events?namespace=..%2F..%2Fapi", &bearer(secret));
    assert_eq!(code, 422, "{body}");
    for (namespace, name) in [
        (n, "htmlkey/status"),
        (n, "?labelSelector=x"),
        ("../../api", "htmlkey"),
        ("", "htmlkey"),
    ] {
        for path in ["/api/delete", "/api/regenerate"] {
            let keys = json!([{"namespace": namespace, "name": name, "uid": uid}]);
            let (code, _, body) = act(path, keys);
            assert_eq!(code, 422, "{path} {namespace}/{name}: {body}");
        }
    }
    let create = json!({"namespace": n, "name": "k/status", "user": "u"}).to_string();
    let (code, _, body) = post(port, "/api/keys", &create, &auth);
    assert_eq!(code, 422, "{body}");
    let (code, _, _) = act("/api/delete", json!([{"namespace": n, "name": "htmlkey"}]));
    assert_eq!(code, 422, "no uid");
    let (code, _, _) = act(
        "/api/delete",
        json!([{"namespace": n, "name": "htmlkey", "uid": ""}]),
    );
    assert_eq!(code, 422, "an empty uid");
    let many = vec![json!({"namespace": n, "name": "htmlkey", "uid": uid}); 501];
    let (code, _, body) = act("/api/delete", json!(many));
    assert_eq!(code, 422, "501 keys: {body}");
    assert_eq!(
        ns.jsonpath("apikey/htmlkey", "{.metadata.uid}"),
        uid,
        "untouched"
    );

    // A key deleted and created again under its name is another object: a request with the UID
    // the page showed does not touch it, and says why in the API server's words (a delete's UID
    // precondition: 409 naming both UIDs; the regenerate patch naming the old UID: 422, the UID
    // is immutable).
    ns.ok(&["delete", "apikey/htmlkey", "--wait"]);
    ns.apply(&key_yaml("htmlkey", "hank", "", None, None));
    let reborn = ns.jsonpath("apikey/htmlkey", "{.metadata.uid}");
    assert_ne!(reborn, uid);
    for (path, status, words) in [
        ("/api/regenerate", 422, [uid.as_str(), "immutable"]),
        ("/api/delete", 409, [uid.as_str(), reborn.as_str()]),
    ] {
        let (code, _, body) = act(
            path,
            json!([{"namespace": n, "name": "htmlkey", "uid": uid}]),
        );
        assert_eq!(code, 200, "{body}");
        let result = &serde_json::from_str::<Value>(&body).expect("JSON")["results"][0];
        assert_eq!(
            (result["ok"].as_bool(), result["code"].as_u64()),
            (Some(false), Some(status)),
            "{path}: {body}"
        );
        let message = result["error"].as_str().unwrap_or_default();
        assert!(
            words.iter().all(|w| message.contains(w)),
            "{path}: {message}"
        );
    }
    assert_eq!(
        ns.jsonpath("apikey/htmlkey", "{.metadata.uid}"),
        reborn,
        "not deleted"
    );
    let annotation = ns.jsonpath(
        "apikey/htmlkey",
        "{.metadata.annotations.apikey\\.dev/regenerate}",
    );
    assert_eq!(annotation, "", "not regenerated");
    let (code, _, body) = act(
        "/api/delete",
        json!([{"namespace": n, "name": "htmlkey", "uid": reborn}]),
    );
    assert_eq!(code, 200);
    assert!(
        body.contains(r#""ok":true"#),
        "its own UID deletes it: {body}"
    );

    // At most 8 live tables at once; a slot frees when its page goes.
    let mut open: Vec<TcpStream> = (0..8)
        .map(|i| {
            let (code, body, stream) = open_stream(port, secret);
            assert_eq!(code, 200, "stream {i}: {body}");
            stream
        })
        .collect();
    let (code, body, _) = open_stream(port, secret);
    assert_eq!(code, 429, "the 9th stream: {body}");
    assert!(body.contains("at most 8"), "{body}");
    drop(open.pop());
    let started = Instant::now();
    let (code, _, _stream) = eventually("a freed slot", Duration::from_secs(20), || {
        let (code, body, stream) = open_stream(port, secret);
        (code == 200).then_some((code, body, stream))
    });
    assert_eq!(code, 200);
    println!(
        "a closed stream's slot was free again after {:?}",
        started.elapsed()
    );
}
