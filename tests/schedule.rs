//! End-to-end: `spec.rotation` (scheduled rotation and its spread over keys, the operator's
//! minimum interval), `spec.expiresAt`, and the schema of both, against the local control plane.
//! Each test has its own namespace and its own operator process watching only it; the short
//! intervals need the operator's `--min-rotation-interval` lowered, which only tests do.
//!
//! Client secrets are compared, never printed: no `assert_eq!` on them (it would print both
//! sides), and the watches below print only annotations and status fields, never Secret data.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use common::token::TokenServer;
use common::*;
use k8s_openapi::jiff::Timestamp;

/// Seconds a scheduled rotation may come after its due time (at most): the operator wakes up to a
/// second after it (its times are whole seconds), then hashes and writes.
const SLACK: i64 = 3;

/// The operator with `--min-rotation-interval=<min>`, otherwise as [`Operator::start`] runs it.
fn start_operator(namespace: &str, min: &str) -> Operator {
    let min = format!("--min-rotation-interval={min}");
    Operator::start_with(
        namespace,
        &["--leader-elect=false", "--http-addr", "127.0.0.1:0", &min],
    )
}

/// An ApiKey manifest (ending in `---`) whose spec has, besides `user`, the flow-style `extra`
/// lines (each a `field: value` at the spec's level, e.g. `rotation: {interval: 6s}`).
fn key_yaml_with(name: &str, user: &str, extra: &[&str]) -> String {
    let extra: String = extra.iter().map(|l| format!("\n  {l}")).collect();
    format!(
        "apiVersion: apikey.dev/v1alpha1\nkind: ApiKey\nmetadata:\n  name: {name}\nspec:\n  user: {user}{extra}\n---\n"
    )
}

/// Reads an RFC 3339 time as the API server and the operator write them.
fn time(text: &str) -> Timestamp {
    text.parse()
        .unwrap_or_else(|e| panic!("{text:?} is not an RFC 3339 time: {e}"))
}

/// Whole seconds from `from` to `to` (the operator's times are whole seconds).
fn seconds(from: Timestamp, to: Timestamp) -> i64 {
    to.as_second() - from.as_second()
}

/// `now + seconds`, to the second, as `spec.expiresAt` takes it.
fn in_seconds(seconds: i64) -> String {
    Timestamp::from_second(Timestamp::now().as_second() + seconds)
        .expect("a time")
        .to_string()
}

/// Waits (by watch) until Secret `secret`'s sealed generation annotation is `generation`.
fn wait_secret_generation(ns: &TempNamespace, secret: &str, generation: u64, timeout: u32) {
    ns.ok(&[
        "wait",
        &format!("--for=jsonpath={{.metadata.annotations.apikey\\.dev/generation}}={generation}"),
        &format!("--timeout={timeout}s"),
        &format!("secret/{secret}"),
    ]);
}

/// Waits (by watch) until the status of ApiKey `key` publishes secret generation `generation`.
fn wait_status_generation(ns: &TempNamespace, key: &str, generation: u64, timeout: u32) {
    ns.ok(&[
        "wait",
        &format!("--for=jsonpath={{.status.secretGeneration}}={generation}"),
        &format!("--timeout={timeout}s"),
        &format!("apikey/{key}"),
    ]);
}

/// The Secret's sealed record, as its annotations show it (never its data).
fn record(ns: &TempNamespace, secret: &str) -> (u64, Timestamp, String) {
    let annotation = |name: &str| {
        ns.jsonpath(
            &format!("secret/{secret}"),
            &format!("{{.metadata.annotations.apikey\\.dev/{name}}}"),
        )
    };
    let generation = annotation("generation");
    (
        generation
            .parse()
            .unwrap_or_else(|_| panic!("generation annotation {generation:?}")),
        time(&annotation("rotated-at")),
        annotation("rotation-reason"),
    )
}

/// `kubectl get <resource> --watch` in a namespace, printing only `COLUMNS` (custom columns: never
/// Secret data) into a file: every version of every object the API server sends, in order. The
/// watch lists first, so it also prints what exists when it starts.
struct Watch {
    _child: KillOnDrop,
    out: PathBuf,
}

/// The columns of a Secret's watch: its sealed record's annotations.
const SECRET_COLUMNS: &[(&str, &str)] = &[
    ("NAME", ".metadata.name"),
    (
        "GENERATION",
        ".metadata.annotations.apikey\\.dev/generation",
    ),
    ("ROTATED", ".metadata.annotations.apikey\\.dev/rotated-at"),
    (
        "REASON",
        ".metadata.annotations.apikey\\.dev/rotation-reason",
    ),
];

/// The columns of an ApiKey's watch: what its status says of the schedule.
const KEY_COLUMNS: &[(&str, &str)] = &[
    ("NAME", ".metadata.name"),
    ("GENERATION", ".status.secretGeneration"),
    ("LAST", ".status.lastRotatedAt"),
    ("NEXT", ".status.nextRotationAt"),
    ("READY", ".status.conditions[?(@.type==\"Ready\")].status"),
    ("REASON", ".status.conditions[?(@.type==\"Ready\")].reason"),
];

impl Watch {
    fn start(ns: &TempNamespace, resource: &str, columns: &[(&str, &str)]) -> Self {
        static STARTED: AtomicU32 = AtomicU32::new(0);
        let n = STARTED.fetch_add(1, Ordering::Relaxed);
        let out = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("watch-{}-{resource}-{n}.txt", ns.name));
        let file = std::fs::File::create(&out).expect("watch output file");
        let spec: Vec<String> = columns.iter().map(|(h, p)| format!("{h}:{p}")).collect();
        let child = kubectl()
            .args(["-n", &ns.name, "get", resource, "--watch", "--no-headers"])
            .arg(format!("-ocustom-columns={}", spec.join(",")))
            .stdin(Stdio::null())
            .stdout(file)
            .stderr(Stdio::null())
            .spawn()
            .expect("kubectl get --watch starts");
        Self {
            _child: KillOnDrop(child),
            out,
        }
    }

    /// Every complete line printed so far, split into its columns (`<none>` for a missing
    /// value).
    fn rows(&self) -> Vec<Vec<String>> {
        std::fs::read_to_string(&self.out)
            .unwrap_or_default()
            .split_inclusive('\n')
            .filter(|l| l.ends_with('\n'))
            .map(|l| l.split_whitespace().map(String::from).collect())
            .collect()
    }

    /// Waits until the watch has printed an object named `name` (then it is established, and sees
    /// every later version).
    fn wait_for(&self, name: &str) {
        eventually(
            &format!("the watch to print {name}"),
            Duration::from_secs(30),
            || self.rows().iter().any(|r| r[0] == name).then_some(()),
        );
    }

    /// The rows of object `name`.
    fn rows_of(&self, name: &str) -> Vec<Vec<String>> {
        self.rows().into_iter().filter(|r| r[0] == name).collect()
    }
}

/// The distinct sealed records (generation, rotated-at, reason) a Secret watch saw for `name`,
/// in the order they first appeared.
fn records_seen(watch: &Watch, name: &str) -> Vec<(u64, Timestamp, String)> {
    let mut seen: Vec<(u64, Timestamp, String)> = Vec::new();
    for row in watch.rows_of(name) {
        if row[1] == "<none>" {
            continue;
        }
        let record = (
            row[1].parse().expect("a generation"),
            time(&row[2]),
            row[3].clone(),
        );
        if !seen.contains(&record) {
            seen.push(record);
        }
    }
    seen
}

#[test]
fn a_short_interval_rotates_exactly_once_per_due_time_across_a_restart() {
    const INTERVAL: i64 = 6;
    install_crd();
    let ns = TempNamespace::new("sched");
    // 6s: a spread window of a tenth of it is under a second, so the spread is 0 and due times
    // are exact
    let mut op = start_operator(&ns.name, "1s");
    ns.apply(&key_yaml_with("k", "sam", &["rotation: {interval: 6s}"]));
    wait_ready(&ns, &["k"]);
    let (id, first) = assert_consistent(&ns, "k", "k");
    let secrets = Watch::start(&ns, "secrets", SECRET_COLUMNS);
    let keys = Watch::start(&ns, "apikeys", KEY_COLUMNS);
    secrets.wait_for("k");
    keys.wait_for("k");

    // two scheduled rotations, then the operator killed (SIGKILL) right after the second one's
    // Secret write, possibly before its status write
    wait_secret_generation(&ns, "k", 3, 30);
    let scheduled = |op: &Operator| {
        eventually(
            "the rotations in the metrics",
            Duration::from_secs(10),
            || {
                let n = op.metric("apikey_keys_issued_total", "reason", "scheduled");
                (n >= 2.0).then_some(n)
            },
        )
    };
    assert_eq!(scheduled(&op), 2.0, "one rotation per due time");
    assert_eq!(
        op.metric("apikey_rotations_total", "trigger", "schedule"),
        2.0
    );
    op.restart();
    // two more due times with the restarted operator
    wait_secret_generation(&ns, "k", 5, 30);
    wait_status_generation(&ns, "k", 5, 30);
    assert_eq!(
        scheduled(&op),
        2.0,
        "the restarted operator rotated once per due time, and not again for the one before it"
    );
    assert_eq!(
        op.metric("apikey_rotations_total", "trigger", "schedule"),
        2.0
    );
    assert_eq!(
        op.metric("apikey_keys_issued_total", "reason", "created"),
        0.0
    );
    // stop here (the next due time is six seconds away), so that what was seen is all there is
    op.kill();
    let (generation, _, reason) = record(&ns, "k");
    assert_eq!((generation, reason.as_str()), (5, "scheduled"));
    let (id_now, last) = assert_consistent(&ns, "k", "k");
    assert_eq!(id_now, id, "the client id stays through rotations");
    assert!(last != first, "the client secret changed");

    // every version of the Secret: generations 1..=5, each with one rotated-at, each due time
    // (the previous rotated-at + the interval) giving exactly one rotation
    let seen = records_seen(&secrets, "k");
    let generations: Vec<u64> = seen.iter().map(|r| r.0).collect();
    assert_eq!(generations, [1, 2, 3, 4, 5], "records seen: {seen:?}");
    assert_eq!(seen[0].2, "created");
    for pair in seen.windows(2) {
        let ((g, before, _), (_, after, reason)) = (&pair[0], &pair[1]);
        assert_eq!(reason, "scheduled", "{seen:?}");
        let gap = seconds(*before, *after);
        assert!(
            (INTERVAL..=INTERVAL + SLACK).contains(&gap),
            "generation {} came {gap}s after generation {g}, the interval is {INTERVAL}s: {seen:?}",
            g + 1
        );
    }

    // the status announced each rotation before it came: for each generation one
    // nextRotationAt (a restart does not move it), its rotated-at + the interval, and the next
    // generation's rotated-at at or just after it
    let mut next: BTreeMap<u64, BTreeSet<String>> = BTreeMap::new();
    let mut last_rotated: BTreeMap<u64, BTreeSet<Timestamp>> = BTreeMap::new();
    for row in keys.rows_of("k") {
        if row[1] == "<none>" {
            continue;
        }
        let g: u64 = row[1].parse().expect("a generation");
        last_rotated.entry(g).or_default().insert(time(&row[2]));
        next.entry(g).or_default().insert(row[3].clone());
        assert_eq!(row[4], "True", "the key stays Ready: {row:?}");
    }
    assert_eq!(
        next.keys().copied().collect::<Vec<_>>(),
        [1, 2, 3, 4, 5],
        "statuses seen: {next:?}"
    );
    for (g, rotated, _) in &seen {
        assert_eq!(
            last_rotated[g],
            BTreeSet::from([*rotated]),
            "status.lastRotatedAt of generation {g}"
        );
        let published: Vec<&String> = next[g].iter().collect();
        assert_eq!(
            published.len(),
            1,
            "one nextRotationAt for generation {g}: {published:?}"
        );
        let due = time(published[0]);
        assert_eq!(seconds(*rotated, due), INTERVAL, "generation {g}");
        // (seen[g - 1] is generation g)
        if let Some((_, following, _)) = seen.get(*g as usize) {
            let late = seconds(due, *following);
            assert!(
                (0..=SLACK).contains(&late),
                "generation {} came {late}s after the published nextRotationAt {due}",
                g + 1
            );
        }
    }

    // one Rotated event per scheduled rotation, also for the one the kill may have interrupted
    let rotated = eventually("the Rotated events", Duration::from_secs(10), || {
        let n = events(&ns, "k", "Rotated");
        (n >= 4).then_some(n)
    });
    assert_eq!(rotated, 4, "one Rotated event per scheduled rotation");
    assert_eq!(events(&ns, "k", "Regenerated"), 0);
    assert_eq!(events(&ns, "k", "Repaired"), 0);
    op.assert_log_free_of(&[first, last]);
}

#[test]
fn restarts_resyncs_and_reapplies_rotate_nothing_before_the_interval() {
    install_crd();
    let ns = TempNamespace::new("sched-still");
    // the default minimum interval: 1h
    let mut op = Operator::start(&ns.name);
    let manifest = key_yaml_with(
        "k",
        "stella",
        &["rotation: {interval: 1h, gracePeriod: 1m}"],
    );
    ns.apply(&manifest);
    wait_ready(&ns, &["k"]);
    let (id, secret) = assert_consistent(&ns, "k", "k");
    let (generation, rotated_at, reason) = record(&ns, "k");
    assert_eq!((generation, reason.as_str()), (1, "created"));

    // the due time: lastRotatedAt + 1h + a spread under a tenth of the interval (360 s)
    let last = time(&ns.jsonpath("apikey/k", "{.status.lastRotatedAt}"));
    assert_eq!(last, rotated_at, "status.lastRotatedAt is the Secret's");
    let next_text = ns.jsonpath("apikey/k", "{.status.nextRotationAt}");
    let after = seconds(last, time(&next_text));
    assert!(
        (3600..3960).contains(&after),
        "nextRotationAt {next_text} is {after}s after lastRotatedAt"
    );
    let message = ns.jsonpath(
        "apikey/k",
        "{.status.conditions[?(@.type==\"Ready\")].message}",
    );
    assert!(!message.contains("minimum"), "1h is the minimum: {message}");

    // two restarts: each operator looks at the key and finds it in sync
    for _ in 0..2 {
        let mark = op.mark();
        op.restart();
        let rv = ns.jsonpath("apikey/k", "{.metadata.resourceVersion}");
        assert_eq!(
            op.wait_reconciled(mark, "k", &rv),
            "in_sync",
            "after a restart"
        );
    }
    // a GitOps re-apply of the same manifest (no change at all), then one that changes only a
    // label, so that the operator looks at the key again with its policy unchanged, as a resync
    // does
    assert!(ns.apply(&manifest).contains("unchanged"));
    let mark = op.mark();
    ns.apply(&manifest.replace("  name: k\n", "  name: k\n  labels: {synced: done}\n"));
    let rv = ns.jsonpath("apikey/k", "{.metadata.resourceVersion}");
    assert_eq!(
        op.wait_reconciled(mark, "k", &rv),
        "in_sync",
        "after a re-apply"
    );

    let (id_now, secret_now) = assert_consistent(&ns, "k", "k");
    assert_eq!(id_now, id);
    assert!(secret_now == secret, "the client secret must not change");
    assert_eq!(record(&ns, "k"), (1, rotated_at, "created".into()));
    assert_eq!(
        ns.jsonpath("apikey/k", "{.status.nextRotationAt}"),
        next_text
    );
    assert_eq!(ns.jsonpath("apikey/k", "{.status.previousSecretHash}"), "");
    let scrape = op.metrics();
    assert!(
        !scrape
            .samples
            .iter()
            .any(|s| s.metric == "apikey_keys_issued_total"
                && s.labels.get("reason") == Some("scheduled")),
        "no scheduled issue"
    );
    assert_eq!(sum_samples(&scrape, "apikey_rotations_total", "", ""), 0.0);
    assert_eq!(events(&ns, "k", "Rotated"), 0);
    op.assert_log_free_of(std::slice::from_ref(&secret));

    // `kubectl get apikeys` shows when (last: what it shows is a matter of the printer column
    // alone)
    let table = ns.ok(&["get", "apikeys"]);
    let header = table.lines().next().expect("a header");
    let start = header
        .find("NEXT ROTATION")
        .unwrap_or_else(|| panic!("no Next Rotation column: {table}"));
    let end = header[start..]
        .find("AGE")
        .map_or(header.len(), |i| start + i);
    let row = table
        .lines()
        .find(|l| l.starts_with("k "))
        .expect("a row for k");
    let cell = row.get(start..end.min(row.len())).unwrap_or("").trim();
    assert!(
        !cell.is_empty() && cell != "<none>" && cell != "<invalid>",
        "the Next Rotation column shows {cell:?} for a rotation due at {next_text}:\n{table}"
    );
}

#[test]
fn a_batch_of_keys_is_spread_over_the_window_by_uid() {
    const KEYS: usize = 40;
    const INTERVAL: i64 = 100;
    install_crd();
    let ns = TempNamespace::new("spread");
    let op = start_operator(&ns.name, "1s");
    let manifest: String = (0..KEYS)
        .map(|i| {
            key_yaml_with(
                &format!("k{i:02}"),
                &format!("user{i}"),
                &["rotation: {interval: 100s}"],
            )
        })
        .collect();
    ns.apply(&manifest);
    wait_all_ready(&ns, 120);

    // (uid, lastRotatedAt, nextRotationAt, secretGeneration) of every key
    let statuses = || -> BTreeMap<String, (String, Timestamp, Timestamp, i64)> {
        let list: serde_json::Value =
            serde_json::from_str(&ns.ok(&["get", "apikeys", "-o", "json"])).expect("JSON");
        list["items"]
            .as_array()
            .expect("items")
            .iter()
            .map(|k| {
                let s = &k["status"];
                let field = |f: &str| s[f].as_str().unwrap_or_else(|| panic!("status.{f}: {s}"));
                (
                    k["metadata"]["name"].as_str().expect("name").to_string(),
                    (
                        k["metadata"]["uid"].as_str().expect("uid").to_string(),
                        time(field("lastRotatedAt")),
                        time(field("nextRotationAt")),
                        s["secretGeneration"].as_i64().expect("secretGeneration"),
                    ),
                )
            })
            .collect()
    };
    let before = statuses();
    assert_eq!(before.len(), KEYS);
    let mut offsets = BTreeSet::new();
    for (name, (uid, last, next, generation)) in &before {
        assert_eq!(*generation, 1, "{name}");
        let offset = seconds(*last, *next) - INTERVAL;
        assert!(
            (0..INTERVAL / 10).contains(&offset),
            "{name}: nextRotationAt is lastRotatedAt + {INTERVAL}s + {offset}s"
        );
        // deterministic: the spread of its UID
        let spread =
            apikey_operator::core::rotation::spread(uid, Duration::from_secs(INTERVAL as u64));
        assert_eq!(offset, spread.as_secs() as i64, "{name} (uid {uid})");
        offsets.insert(offset);
    }
    assert!(
        offsets.len() >= 6,
        "{KEYS} keys share only the offsets {offsets:?} of a 10 s window"
    );

    // the rotations come at those times, once each, spread over the window
    ns.ok(&[
        "wait",
        "--for=jsonpath={.status.secretGeneration}=2",
        "apikeys",
        "--all",
        "--timeout=150s",
    ]);
    let after = statuses();
    let mut rotated_seconds = BTreeSet::new();
    for (name, (_, _, due, _)) in &before {
        let (_, rotated, _, generation) = &after[name];
        assert_eq!(*generation, 2, "{name} rotated once");
        let late = seconds(*due, *rotated);
        assert!(
            (0..=SLACK).contains(&late),
            "{name} rotated {late}s after its nextRotationAt {due}"
        );
        rotated_seconds.insert(rotated.as_second());
    }
    assert!(
        rotated_seconds.len() >= 6,
        "the {KEYS} rotations came in only {} distinct seconds",
        rotated_seconds.len()
    );
    let reasons = ns.ok(&[
        "get",
        "secrets",
        "-o",
        "custom-columns=R:.metadata.annotations.apikey\\.dev/rotation-reason,G:.metadata.annotations.apikey\\.dev/generation",
        "--no-headers",
    ]);
    assert_eq!(
        reasons
            .lines()
            .filter(|l| l.split_whitespace().eq(["scheduled", "2"]))
            .count(),
        KEYS,
        "{reasons}"
    );
    assert_eq!(
        op.metric("apikey_keys_issued_total", "reason", "scheduled"),
        KEYS as f64
    );
    assert_eq!(
        op.metric("apikey_rotations_total", "trigger", "schedule"),
        KEYS as f64
    );
    let rotated_events = eventually("the Rotated events", Duration::from_secs(20), || {
        let n = ns
            .ok(&[
                "get",
                "events",
                "-o",
                "jsonpath={range .items[*]}{.reason}{\"\\n\"}{end}",
            ])
            .lines()
            .filter(|r| *r == "Rotated")
            .count();
        (n >= KEYS).then_some(n)
    });
    assert_eq!(rotated_events, KEYS);
}

#[test]
fn an_interval_below_the_operators_minimum_rotates_at_the_minimum_and_says_so() {
    install_crd();
    let ns = TempNamespace::new("sched-min");
    let op = start_operator(&ns.name, "10s");
    let keys = Watch::start(&ns, "apikeys", KEY_COLUMNS);
    ns.apply(&key_yaml_with("k", "mina", &["rotation: {interval: 2s}"]));
    wait_ready(&ns, &["k"]);
    let said = "spec.rotation.interval 2s is below the operator's minimum: rotating every 10s";
    let message = || {
        ns.jsonpath(
            "apikey/k",
            "{.status.conditions[?(@.type==\"Ready\")].message}",
        )
    };
    let m = message();
    assert!(m.contains(said), "{m}");
    // for 10 s the spread window is one second: no spread
    let last = time(&ns.jsonpath("apikey/k", "{.status.lastRotatedAt}"));
    let next = time(&ns.jsonpath("apikey/k", "{.status.nextRotationAt}"));
    assert_eq!(seconds(last, next), 10);
    let (_, first, _) = record(&ns, "k");
    assert_eq!(first, last);

    // the one rotation comes after 10 s, not after 2 s
    wait_secret_generation(&ns, "k", 2, 40);
    wait_status_generation(&ns, "k", 2, 30);
    let (generation, second, reason) = record(&ns, "k");
    assert_eq!((generation, reason.as_str()), (2, "scheduled"));
    let gap = seconds(first, second);
    assert!(
        (10..=10 + SLACK).contains(&gap),
        "rotated {gap}s after the first secret"
    );
    assert_eq!(
        ns.jsonpath(
            "apikey/k",
            "{.status.conditions[?(@.type==\"Ready\")].status}"
        ),
        "True"
    );
    let m = message();
    assert!(m.contains(said), "{m}");
    assert_eq!(
        op.metric("apikey_keys_issued_total", "reason", "scheduled"),
        1.0
    );
    // Ready stayed True from the first Ready on, through the rotation
    let rows = keys.rows_of("k");
    let from = rows
        .iter()
        .position(|r| r[4] == "True")
        .expect("a Ready row");
    assert!(
        rows[from..].iter().all(|r| r[4] == "True"),
        "Ready left True: {rows:?}"
    );
}

#[test]
fn the_schema_refuses_bad_durations_times_and_rollout_targets() {
    install_crd();
    let ns = TempNamespace::new("sched-schema");
    let refused = |extra: &str, needles: &[&str]| {
        let err = ns.fails(
            &["apply", "-f", "-"],
            Some(&key_yaml_with("bad", "bea", &[extra])),
        );
        for needle in needles {
            assert!(
                err.contains(needle),
                "applying `{extra}` should fail naming {needle:?}; it said: {err}"
            );
        }
    };
    refused(
        "rotation: {interval: 1d}",
        &["spec.rotation.interval", "should match"],
    );
    refused(
        "rotation: {interval: 0s}",
        &["spec.rotation.interval must be between 1s and 87600h"],
    );
    refused(
        "rotation: {interval: -5m}",
        &["spec.rotation.interval", "should match"],
    );
    refused(
        "rotation: {gracePeriod: 721h}",
        &["spec.rotation.gracePeriod must be at most 720h"],
    );
    refused("expiresAt: next-tuesday", &["spec.expiresAt", "date-time"]);
    // a time past what the operator and the token server can read would break their watches
    refused(
        "expiresAt: \"9999-12-31T00:00:00Z\"",
        &["spec.expiresAt must be before the year 3000"],
    );
    // a malformed duration gets the pattern's message alone, and one too long for duration() too
    for bad in ["rotation: {interval: 1d}", "rotation: {interval: 9999999h}"] {
        let err = ns.fails(
            &["apply", "-f", "-"],
            Some(&key_yaml_with("bad", "bea", &[bad])),
        );
        assert!(err.contains("should match"), "{bad}: {err}");
        assert!(!err.contains("type conversion error"), "{bad}: {err}");
    }
    refused(
        "rolloutRestart: [{kind: Deployment, name: web, namespace: other}]",
        &[r#"unknown field "spec.rolloutRestart[0].namespace""#],
    );
    refused(
        "rolloutRestart: [{kind: CronJob, name: web}]",
        &[
            "spec.rolloutRestart[0].kind",
            "Unsupported value: \"CronJob\"",
        ],
    );
    assert_eq!(ns.ok(&["get", "apikeys", "-o", "name"]), "", "none created");
    // the same fields with good values are accepted
    let good = key_yaml_with(
        "good",
        "bea",
        &[
            "rotation: {interval: 1h30m, gracePeriod: 720h}",
            "expiresAt: \"2099-01-31T00:00:00Z\"",
            "rolloutRestart: [{kind: Deployment, name: web}, {kind: StatefulSet, name: db}, {kind: DaemonSet, name: agent}]",
        ],
    );
    ok_with(
        &["-n", &ns.name, "apply", "--dry-run=server", "-f", "-"],
        Some(&good),
    );
}

#[test]
fn an_expired_key_is_refused_keeps_its_secret_and_works_again_when_moved_later() {
    install_crd();
    let ns = TempNamespace::new("expiry");
    let op = Operator::start(&ns.name);
    let ts = TokenServer::start_without_budgets(&ns.name);
    let expires = in_seconds(10);
    let manifest = key_yaml_with("k", "eve", &[&format!("expiresAt: \"{expires}\"")]);
    ns.apply(&manifest);
    wait_ready(&ns, &["k"]);
    let (id, secret) = assert_consistent(&ns, "k", "k");
    assert_eq!(ns.jsonpath("apikey/k", "{.status.nextRotationAt}"), "");
    // the token server issues tokens until then (it has to see the key first: a poll)
    eventually("a token before expiry", Duration::from_secs(10), || {
        (ts.token_basic(&id, &secret).status == 200).then_some(())
    });
    assert!(
        Timestamp::now() < time(&expires),
        "the token was issued before expiresAt"
    );

    wait_reason(&ns, "k", "Expired");
    assert!(Timestamp::now() >= time(&expires));
    let ready = |field: &str| {
        ns.jsonpath(
            "apikey/k",
            &format!("{{.status.conditions[?(@.type==\"Ready\")].{field}}}"),
        )
    };
    assert_eq!(ready("status"), "False");
    assert!(ready("message").contains("expired"), "{}", ready("message"));
    assert_eq!(ns.jsonpath("apikey/k", "{.status.secretHash}"), "");
    assert_eq!(ns.jsonpath("apikey/k", "{.status.clientId}"), id);
    assert!(
        credentials(&ns, "k") == (id.clone(), secret.clone()),
        "the Secret keeps the same credentials"
    );
    let (generation, _, _) = record(&ns, "k");
    assert_eq!(generation, 1);
    // the token server refuses it (by its own clock it did from expiresAt on)
    let refused = ts.token_basic(&id, &secret);
    assert_eq!(refused.status, 401, "{}", refused.body);
    assert_eq!(refused.body["error"], "invalid_client");
    let warned = eventually("the Expired event", Duration::from_secs(10), || {
        let n = events(&ns, "k", "Expired");
        (n >= 1).then_some(n)
    });
    assert_eq!(warned, 1);

    // moved later: Ready again, with the same secret, nothing rotated
    ns.apply(&manifest.replace(&expires, &in_seconds(3600)));
    wait_ready(&ns, &["k"]);
    let again = assert_consistent(&ns, "k", "k");
    assert!(
        again == (id.clone(), secret.clone()),
        "the same client id and secret"
    );
    assert_eq!(record(&ns, "k").0, 1, "no rotation");
    assert_eq!(op.metric_total("apikey_keys_issued_total"), 1.0);
    assert_eq!(op.metric_total("apikey_rotations_total"), 0.0);
    // the token server sees the key again (a poll: its cache)
    let answer = eventually(
        "a token after expiresAt moved",
        Duration::from_secs(20),
        || {
            let a = ts.token_basic(&id, &secret);
            (a.status != 401).then_some(a)
        },
    );
    assert_eq!(answer.status, 200, "{}", answer.body);
    op.assert_log_free_of(std::slice::from_ref(&secret));
    ts.assert_log_free_of(&[secret]);
}

#[test]
fn a_key_created_already_expired_gets_a_secret_and_is_never_ready() {
    install_crd();
    let ns = TempNamespace::new("expired");
    let op = Operator::start(&ns.name);
    let ts = TokenServer::start(&ns.name, &[]);
    // a key that is Ready already, so that the watch is known to be established before the
    // expired key is created: it then sees every version of it
    ns.apply(&key_yaml_with("live", "liv", &[]));
    wait_ready(&ns, &["live"]);
    let keys = Watch::start(&ns, "apikeys", KEY_COLUMNS);
    keys.wait_for("live");

    ns.apply(&key_yaml_with(
        "old",
        "olga",
        &["expiresAt: \"2020-01-01T00:00:00Z\""],
    ));
    wait_reason(&ns, "old", "Expired");
    let id = ns.jsonpath("apikey/old", "{.status.clientId}");
    let (secret_id, secret) = credentials(&ns, "old");
    assert_eq!(secret_id, id, "its Secret holds its client id");
    assert!(
        apikey_operator::core::credentials::ClientSecret::new(secret.clone()).is_well_formed(),
        "its Secret holds a client secret"
    );
    assert_eq!(ns.jsonpath("apikey/old", "{.status.secretHash}"), "");
    assert_eq!(ns.jsonpath("apikey/old", "{.status.nextRotationAt}"), "");
    let rows = keys.rows_of("old");
    assert!(!rows.is_empty());
    assert!(
        rows.iter().all(|r| r[4] != "True"),
        "an expired key was never Ready: {rows:?}"
    );
    let refused = ts.token_basic(&id, &secret);
    assert_eq!(refused.status, 401, "{}", refused.body);
    assert_eq!(refused.body["error"], "invalid_client");
    let warned = eventually("the Expired event", Duration::from_secs(10), || {
        let n = events(&ns, "old", "Expired");
        (n >= 1).then_some(n)
    });
    assert_eq!(warned, 1);
    op.assert_log_free_of(std::slice::from_ref(&secret));
    ts.assert_log_free_of(&[secret]);
}
