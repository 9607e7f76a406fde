//! End-to-end: `kubectl apikey console` in a real headless browser (Debian's Chromium and
//! chromedriver), against the local control plane, with an operator of its own per namespace.
//! Screenshots of the main states go to target/console-screenshots/ (CI keeps target/).

mod common;

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::TcpStream;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Stdio};
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
            .and_then(|rest| rest.split('/').next())
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("a 127.0.0.1 URL with a port: {url}"));
        assert!(
            url.contains("/?token=") && url.len() > 60,
            "a random token: {url}"
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

    // Nothing without the token's cookie, not even the page's files or its event stream.
    for path in ["/", "/console.js", "/api/events", "/api/context"] {
        let (code, head, body) = get(port, path, "");
        assert_eq!(code, 403, "{path} without the session cookie: {body}");
        assert!(head.contains("no-store") && head.contains("frame-ancestors 'none'"));
    }

    let browser = Browser::start(n).await;
    let c = &browser.client;
    c.goto(&console.url).await.expect("open the console");
    // The token left the address bar for the cookie.
    let here = c.current_url().await.expect("url");
    assert_eq!(here.as_str(), format!("http://127.0.0.1:{port}/"));
    until_text(c, "status", "0 keys").await;
    screenshot(c, "01-empty").await;

    // A second redemption of the link is refused.
    let path_and_token = &console.url[console.url.find("/?").expect("a query")..];
    let (code, _, body) = get(port, path_and_token, "");
    assert_eq!(code, 403);
    assert!(body.contains("already used"), "{body}");

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

    // Two more, made with kubectl: the table is live.
    ns.apply(
        &[
            key_yaml("beta", "bob", "team: ops", None, None),
            key_yaml("gamma", "carol", "team: web", None, None),
        ]
        .concat(),
    );
    wait_ready(&ns, &["alpha", "beta", "gamma"]);
    until_text(c, &format!("ready-{n}/beta"), "True").await;
    until_text(c, &format!("ready-{n}/gamma"), "True").await;
    let gamma_generation = secret_annotation(&ns, "gamma", "apikey.dev/generation");
    assert_eq!(gamma_generation, "1");
    screenshot(c, "03-three-keys").await;

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
    screenshot(c, "04-confirm-regenerate").await;
    click(c, "confirm-button").await;
    until_text(c, &format!("state-{n}/alpha"), "rotated (generation 2)").await;
    until_text(c, &format!("state-{n}/beta"), "rotated (generation 2)").await;
    assert_eq!(text(c, &format!("state-{n}/gamma")).await, "");
    assert_eq!(text(c, "alert").await, "");
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

    // Bulk delete two, after the confirmation.
    click(c, &format!("select-{n}/alpha")).await;
    click(c, &format!("select-{n}/beta")).await;
    click(c, "bulk-button").await;
    click(c, "bulk-delete").await;
    assert!(dialog_open(c, "confirm-dialog").await);
    assert_eq!(text(c, "confirm-button").await, "Delete");
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

    // With the session cookie: another Host, or a POST from another site, is refused; the
    // console's own origin is not. No CORS headers, ever.
    let cookie = c
        .get_all_cookies()
        .await
        .unwrap()
        .into_iter()
        .find(|k| k.name() == format!("apikey-console-{port}"))
        .expect("the session cookie");
    assert_eq!(cookie.http_only(), Some(true));
    let with_cookie = format!("Cookie: {}={}\r\n", cookie.name(), cookie.value());
    let (code, head, _) = get(port, "/", &with_cookie);
    assert_eq!(code, 200);
    assert!(head.contains("default-src 'self'") && head.contains("nosniff"));
    assert!(!head.to_ascii_lowercase().contains("access-control-"));
    let (code, _, _) = http(
        port,
        &format!(
            "GET / HTTP/1.1\r\nHost: rebind.example:{port}\r\n{with_cookie}Connection: close\r\n\r\n"
        ),
    );
    assert_eq!(code, 403, "a foreign Host");
    let body = format!(r#"{{"keys":[{{"namespace":"{n}","name":"gamma"}}]}}"#);
    let (code, head, _) = post(
        port,
        "/api/delete",
        &body,
        &format!("{with_cookie}Origin: http://evil.example\r\n"),
    );
    assert_eq!(code, 403, "a foreign Origin");
    assert!(!head.to_ascii_lowercase().contains("access-control-"));
    let (code, _, _) = post(port, "/api/delete", &body, &with_cookie);
    assert_eq!(code, 403, "no Origin on a POST");
    let (code, _, _) = post(
        port,
        "/api/delete",
        &body,
        &format!("Origin: http://127.0.0.1:{port}\r\n"),
    );
    assert_eq!(code, 403, "no cookie");
    assert!(
        exists(&ns, "apikey/gamma"),
        "no refused request touched gamma"
    );
    let (code, _, body) = post(
        port,
        "/api/regenerate",
        r#"{"keys":[]}"#,
        &format!("{with_cookie}Origin: http://127.0.0.1:{port}\r\n"),
    );
    assert_eq!(code, 422, "the console's own origin gets through: {body}");

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
        c.active_element()
            .await
            .unwrap()
            .send_keys(&Key::Enter.to_string())
            .await
            .unwrap();
        until(
            c,
            "the menu's first item to have focus",
            "return document.activeElement.textContent === 'Regenerate Client Secret';",
        )
        .await;
        c.active_element()
            .await
            .unwrap()
            .send_keys(&Key::Down.to_string())
            .await
            .unwrap();
        c.active_element()
            .await
            .unwrap()
            .send_keys(&Key::Enter.to_string())
            .await
            .unwrap();
        assert!(dialog_open(c, "confirm-dialog").await);
    };
    keyboard_delete().await;
    c.active_element()
        .await
        .unwrap()
        .send_keys(&Key::Escape.to_string())
        .await
        .unwrap();
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
    c.active_element()
        .await
        .unwrap()
        .send_keys(&Key::Enter.to_string())
        .await
        .unwrap();
    let alert = until_text(c, "alert", "forbidden").await;
    assert!(
        alert.contains(&format!("{n}/k: ")) && alert.contains("cannot delete resource \"apikeys\""),
        "the API server's message verbatim: {alert}"
    );
    screenshot(c, "09-rbac-forbidden").await;
    assert!(exists(&ns, "apikey/k"));
    c.clone().close().await.expect("end the session");
}
