//! The token server end to end, against the local control plane: real clients and verifiers
//! nobody here wrote (authlib, PyJWT, the Kubernetes API server's JWT authenticator), the
//! refusals of RFC 6749 §5.2, revocation by regeneration and deletion, brute force and bad HTTP,
//! and the signing keys' rotation.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use apikey_operator::core::credentials::{generate_client_id, generate_client_secret};
use common::token::*;
use common::*;

/// A namespace with an operator and Ready keys `name` for `user`; their credentials.
fn keys(prefix: &str, keys: &[(&str, &str)]) -> (TempNamespace, Operator, Vec<(String, String)>) {
    install_crd();
    let ns = TempNamespace::new(prefix);
    let op = Operator::start(&ns.name);
    let yaml: String = keys
        .iter()
        .map(|(name, user)| key_yaml(name, user, "", None, None))
        .collect();
    ns.apply(&yaml);
    let names: Vec<&str> = keys.iter().map(|(n, _)| *n).collect();
    wait_ready(&ns, &names);
    let creds = names.iter().map(|n| credentials(&ns, n)).collect();
    (ns, op, creds)
}

/// A kubeconfig with the cluster's address and CA, and no user: `--token` says who calls.
fn anonymous_kubeconfig() -> std::path::PathBuf {
    let (server, ca) = cluster_endpoint();
    scratch_file(
        &format!("token-user-{}.kubeconfig", std::process::id()),
        &format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: local\n  cluster: {{server: {server}, certificate-authority: {ca}}}\ncontexts:\n- name: local\n  context: {{cluster: local}}\ncurrent-context: local\n"
        ),
    )
}

fn kubectl_with_token(token: &str, args: &[&str]) -> (bool, String) {
    let out = Command::new(kubectl_bin())
        .env("KUBECONFIG", anonymous_kubeconfig())
        .arg("--token")
        .arg(token)
        .args(args)
        .output()
        .expect("kubectl runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text.trim().to_string())
}

/// The venv with authlib and PyJWT (tests/token/python-env makes it once).
fn python() -> String {
    stdout_of(Command::new(root().join("tests/token/python-env")))
        .lines()
        .last()
        .expect("the venv's python")
        .trim()
        .to_string()
}

#[test]
fn authlib_gets_tokens_pyjwt_and_the_kubernetes_api_server_accept_them() {
    // The server runs as deploy/'s ServiceAccount, keeping its keys in its namespace: what it
    // needs of the cluster is exactly what deploy/token-server grants.
    let sa = service_account_kubeconfig_for("apikey-token-server", "apikey-token-server");
    let user = format!("tok-{}@example.com", std::process::id());
    let (ns, _op, creds) = keys("token-interop", &[("k", &user)]);
    let (id, secret) = creds[0].clone();
    let ts = TokenServer::start_on(trusted_issuer_port(), &sa, "apikey-token-server", &[]);

    // authlib (client_secret_basic and client_secret_post) and PyJWT's JWKS client, which finds
    // the keys from the discovery document alone
    let dir =
        std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("interop-{}", ns.name));
    std::fs::create_dir_all(&dir).expect("secret dir");
    std::fs::write(dir.join("client-id"), &id).expect("client-id");
    std::fs::write(dir.join("client-secret"), &secret).expect("client-secret");
    let token_file = dir.join("tokens");
    let out = Command::new(python())
        .arg(root().join("tests/token/interop.py"))
        .args([
            "--issuer",
            &ts.issuer,
            "--audience",
            "apikey-e2e",
            "--user",
            &user,
        ])
        .arg("--ca")
        .arg(pki().join("ca.crt"))
        .arg("--secret-dir")
        .arg(&dir)
        .arg("--token-out")
        .arg(&token_file)
        .output()
        .expect("interop.py runs");
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "interop.py failed:\n{report}");
    assert!(!report.contains(&secret), "interop.py printed the secret");
    let tokens = std::fs::read_to_string(&token_file).expect("tokens written");
    let _ = std::fs::remove_dir_all(&dir);
    let token = tokens.lines().next().expect("a token").trim().to_string();
    assert!(!report.contains(&token), "interop.py printed a token");

    // the API server's JWT authenticator (tests/cluster/up trusts this issuer) names the user
    let who = eventually(
        "the API server to accept the token",
        Duration::from_secs(60),
        || {
            let (ok_, out) = kubectl_with_token(
                &token,
                &[
                    "auth",
                    "whoami",
                    "-o",
                    "jsonpath={.status.userInfo.username}",
                ],
            );
            ok_.then_some(out)
        },
    );
    // (the API server maps `sub` with the prefix `apikey:`, as the README recommends)
    assert_eq!(
        who,
        format!("apikey:{user}"),
        "the token acts for the key's user"
    );
    // and RBAC applies to that user: nothing until a RoleBinding grants it
    let (allowed, out) =
        kubectl_with_token(&token, &["-n", &ns.name, "get", "apikeys", "-o", "name"]);
    assert!(!allowed && out.contains("forbidden"), "{out}");
    ns.ok(&[
        "create",
        "role",
        "read-keys",
        "--verb=get,list",
        "--resource=apikeys.apikey.dev",
    ]);
    ns.ok(&[
        "create",
        "rolebinding",
        "read-keys",
        "--role=read-keys",
        &format!("--user=apikey:{user}"),
    ]);
    let listed = eventually(
        "RBAC to apply to the token's user",
        Duration::from_secs(30),
        || {
            let (ok_, out) =
                kubectl_with_token(&token, &["-n", &ns.name, "get", "apikeys", "-o", "name"]);
            ok_.then_some(out)
        },
    );
    assert_eq!(listed, "apikey.apikey.dev/k");
    let mut secrets = vec![secret];
    secrets.extend(tokens.lines().map(String::from));
    ts.assert_log_free_of(&secrets);
}

#[test]
fn refusals_follow_rfc_6749_and_regeneration_or_deletion_revokes() {
    let (ns, mut op, creds) = keys("token-refuse", &[("a", "alice"), ("b", "bob")]);
    let ((a_id, a_secret), (b_id, b_secret)) = (creds[0].clone(), creds[1].clone());
    let ts = TokenServer::start_without_budgets(&ns.name);

    // success: RFC 6749 §5.1, a JWT access token per RFC 9068
    let ok_ = ts.token_basic(&a_id, &a_secret);
    assert_eq!(ok_.status, 200, "{}", ok_.body);
    assert_eq!(ok_.header("cache-control").as_deref(), Some("no-store"));
    assert_eq!(ok_.body["token_type"], "Bearer");
    assert_eq!(ok_.body["expires_in"], 900);
    let a_token = ok_.body["access_token"]
        .as_str()
        .expect("token")
        .to_string();
    let (header, claims) = decode_jwt(&a_token);
    assert_eq!(
        (header["typ"].as_str(), header["alg"].as_str()),
        (Some("at+jwt"), Some("ES256"))
    );
    assert!(
        ts.jwks_kids()
            .contains(&header["kid"].as_str().expect("kid").to_string())
    );
    assert_eq!(claims["sub"], "alice");
    assert_eq!(claims["client_id"], a_id.as_str());
    assert_eq!(claims["aud"], "apikey-e2e");
    assert_eq!(claims["iss"], ts.issuer.as_str());
    assert_eq!(claims["apikey"]["namespace"], ns.name.as_str());
    assert_eq!(claims["apikey"]["name"], "a");
    assert_eq!(claims["apikey"]["generation"], 1);
    // client_secret_post
    let post = Answer::of(
        ts.client(None)
            .post(ts.url("/oauth2/token"))
            .form(&[
                ("grant_type", "client_credentials"),
                ("client_id", &b_id),
                ("client_secret", &b_secret),
            ])
            .send()
            .expect("post"),
    );
    assert_eq!(post.status, 200, "{}", post.body);

    // a wrong secret and an unknown client id: the same answer (RFC 6749 §5.2)
    let other_secret = generate_client_secret().expect("csprng");
    let wrong = ts.token_basic(&a_id, other_secret.expose());
    let unknown = ts.token_basic(
        &generate_client_id().expect("csprng"),
        other_secret.expose(),
    );
    for refused in [&wrong, &unknown] {
        assert_eq!(refused.status, 401);
        assert_eq!(refused.body["error"], "invalid_client");
        assert!(
            refused
                .header("www-authenticate")
                .is_some_and(|h| h.starts_with("Basic"))
        );
    }
    assert_eq!(wrong.body, unknown.body);
    assert_eq!(
        ts.metric("apikey_token_failures_total", "reason", "wrong_secret"),
        1.0
    );
    assert_eq!(
        ts.metric("apikey_token_failures_total", "reason", "unknown_client"),
        1.0
    );

    // a malformed secret is answered without hashing
    let hashed = ts.metric("apikey_token_verification_duration_seconds_count", "", "");
    let malformed = ts.token_basic(&a_id, "aksk_not-a-real-secret");
    assert_eq!(
        (malformed.status, &malformed.body["error"]),
        (401, &serde_json::json!("invalid_client"))
    );
    assert_eq!(
        ts.metric(
            "apikey_token_failures_total",
            "reason",
            "malformed_credentials"
        ),
        1.0
    );
    assert_eq!(
        ts.metric("apikey_token_verification_duration_seconds_count", "", ""),
        hashed,
        "no argon2id ran"
    );

    // introspection (RFC 7662), the caller authenticated with b's credentials, once b's key is
    // labelled to allow it
    let denied = ts.introspect(&a_token, &b_id, &b_secret);
    assert_eq!(
        (denied.status, &denied.body["error"]),
        (403, &serde_json::json!("unauthorized_client"))
    );
    ns.ok(&["label", "apikey", "b", "apikey.dev/introspect=true"]);
    let active = eventually("b may introspect", Duration::from_secs(20), || {
        let answer = ts.introspect(&a_token, &b_id, &b_secret);
        (answer.status == 200).then_some(answer)
    });
    assert_eq!(active.status, 200);
    assert_eq!(active.body["active"], true, "{}", active.body);
    assert_eq!(active.body["username"], "alice");
    assert_eq!(
        ts.introspect(&a_token, &b_id, other_secret.expose()).status,
        401
    );

    // regeneration: the old secret is refused and its tokens inactive within seconds; the new
    // secret works
    ns.ok(&["annotate", "apikey", "a", "apikey.dev/regenerate=r1"]);
    wait_handled(&ns, "a", "r1");
    let (_, new_secret) = credentials(&ns, "a");
    assert!(
        new_secret != a_secret,
        "(the values are secrets: not shown)"
    );
    eventually("the new secret to work", Duration::from_secs(20), || {
        (ts.token_basic(&a_id, &new_secret).status == 200).then_some(())
    });
    assert_eq!(
        ts.token_basic(&a_id, &a_secret).status,
        401,
        "the old secret is refused"
    );
    let after = ts.introspect(&a_token, &b_id, &b_secret);
    assert_eq!(
        after.body,
        serde_json::json!({"active": false}),
        "a token of the old secret is inactive"
    );
    let new_token = ts.access_token(&a_id, &new_secret);
    assert_eq!(decode_jwt(&new_token).1["apikey"]["generation"], 2);

    // not Ready: with the operator stopped, a Ready=False status makes the key refuse
    op.kill();
    ns.ok(&[
        "patch", "apikey", "b", "--subresource=status", "--type=merge", "-p",
        r#"{"status":{"conditions":[{"type":"Ready","status":"False","reason":"Test","message":"set by the test","lastTransitionTime":"2026-01-01T00:00:00Z"}]}}"#,
    ]);
    eventually(
        "a key that is not Ready to be refused",
        Duration::from_secs(20),
        || (ts.token_basic(&b_id, &b_secret).status == 401).then_some(()),
    );
    assert!(ts.metric("apikey_token_failures_total", "reason", "not_ready") >= 1.0);

    // deletion: refused, and its tokens inactive
    ns.ok(&["delete", "apikey", "a", "--wait=true"]);
    eventually(
        "a deleted key to be refused",
        Duration::from_secs(20),
        || (ts.token_basic(&a_id, &new_secret).status == 401).then_some(()),
    );
    // (the caller must be a Ready key: none is left but the introspected token's is gone too)
    assert!(ts.metric("apikey_token_issued_total", "", "") >= 3.0);
    ts.assert_log_free_of(&[a_secret, new_secret, b_secret, a_token, new_token]);
}

#[test]
fn brute_force_is_locked_out_while_others_are_served_and_bad_http_gets_a_clear_4xx() {
    let (ns, _op, creds) = keys("token-abuse", &[("a", "alice"), ("b", "bob")]);
    let ((a_id, a_secret), (b_id, b_secret)) = (creds[0].clone(), creds[1].clone());
    let ts = TokenServer::start(&ns.name, &[]);
    let a_token = ts.access_token(&a_id, &a_secret); // a's verification is remembered

    // a burst of wrong secrets for a's client id, from 127.0.0.2
    let attacker = ts.client(Some("127.0.0.2"));
    let mut statuses = Vec::new();
    let mut retry_after = None;
    for _ in 0..12 {
        let guess = generate_client_secret().expect("csprng");
        let r = attacker
            .post(ts.url("/oauth2/token"))
            .basic_auth(&a_id, Some(guess.expose()))
            .form(&[("grant_type", "client_credentials")])
            .send()
            .expect("request");
        if r.status() == 429 {
            retry_after = r
                .headers()
                .get("retry-after")
                .and_then(|v| v.to_str().ok())
                .map(String::from);
        }
        statuses.push(r.status().as_u16());
    }
    assert_eq!(
        statuses.iter().filter(|s| **s == 401).count(),
        5,
        "{statuses:?}"
    );
    assert_eq!(
        statuses.iter().filter(|s| **s == 429).count(),
        7,
        "{statuses:?}"
    );
    let wait: u64 = retry_after.expect("Retry-After").parse().expect("seconds");
    assert!((1..=10).contains(&wait), "{wait}");
    assert!(ts.metric("apikey_token_rate_limited_total", "by", "client_id") >= 7.0);
    // other clients are served, and so is a itself while its verification is remembered
    assert_eq!(ts.token_basic(&b_id, &b_secret).status, 200);
    assert_eq!(ts.token_basic(&a_id, &a_secret).status, 200);

    // bad HTTP input: a clear 4xx each, and the server lives on
    let c = ts.client(None);
    let url = ts.url("/oauth2/token");
    let form = "application/x-www-form-urlencoded";
    let send = |r: reqwest::blocking::RequestBuilder| Answer::of(r.send().expect("request"));
    let cases: Vec<(&str, Answer, u16, Option<&str>)> = vec![
        (
            "wrong content type",
            send(
                c.post(&url)
                    .header("content-type", "application/json")
                    .body(r#"{"grant_type":"client_credentials"}"#),
            ),
            400,
            Some("invalid_request"),
        ),
        (
            "duplicated parameter",
            send(
                c.post(&url)
                    .header("content-type", form)
                    .basic_auth(&b_id, Some(&b_secret))
                    .body("grant_type=client_credentials&grant_type=client_credentials"),
            ),
            400,
            Some("invalid_request"),
        ),
        (
            "missing grant_type",
            send(
                c.post(&url)
                    .header("content-type", form)
                    .basic_auth(&b_id, Some(&b_secret))
                    .body("x=1"),
            ),
            400,
            Some("invalid_request"),
        ),
        (
            "another grant type",
            send(
                c.post(&url)
                    .header("content-type", form)
                    .basic_auth(&b_id, Some(&b_secret))
                    .body("grant_type=password"),
            ),
            400,
            Some("unsupported_grant_type"),
        ),
        (
            "a scope",
            send(
                c.post(&url)
                    .header("content-type", form)
                    .basic_auth(&b_id, Some(&b_secret))
                    .body("grant_type=client_credentials&scope=admin"),
            ),
            400,
            Some("invalid_scope"),
        ),
        (
            "two authentication methods",
            send(
                c.post(&url)
                    .header("content-type", form)
                    .basic_auth(&b_id, Some(&b_secret))
                    .body(format!(
                        "grant_type=client_credentials&client_id={b_id}&client_secret=x"
                    )),
            ),
            400,
            Some("invalid_request"),
        ),
        (
            "non-UTF-8 body",
            send(
                c.post(&url)
                    .header("content-type", form)
                    .body(vec![0x67, 0xff, 0xfe, 0x3d]),
            ),
            400,
            Some("invalid_request"),
        ),
        (
            "garbage Basic",
            send(
                c.post(&url)
                    .header("content-type", form)
                    .header("authorization", "Basic !!!")
                    .body("grant_type=client_credentials"),
            ),
            401,
            Some("invalid_client"),
        ),
        (
            "oversized body",
            send(c.post(&url).header("content-type", form).body(format!(
                "grant_type=client_credentials&pad={}",
                "x".repeat(9000)
            ))),
            413,
            None,
        ),
        (
            "oversized header",
            send(
                c.post(&url)
                    .header("content-type", form)
                    .header("x-pad", "x".repeat(20_000))
                    .body("grant_type=client_credentials"),
            ),
            431,
            None,
        ),
        ("GET on the token endpoint", send(c.get(&url)), 405, None),
    ];
    for (what, answer, status, error) in &cases {
        assert_eq!(answer.status, *status, "{what}: {}", answer.body);
        if let Some(error) = error {
            assert_eq!(answer.body["error"], *error, "{what}");
        }
    }
    assert_eq!(
        ts.token_basic(&b_id, &b_secret).status,
        200,
        "still serving"
    );

    // a client that keeps its old secret after a regeneration (the kubelet has not updated its
    // mounted Secret yet) is refused, but does not lock out the new secret it will read
    ns.ok(&["annotate", "apikey", "b", "apikey.dev/regenerate=r1"]);
    wait_handled(&ns, "b", "r1");
    let (_, b_new) = credentials(&ns, "b");
    eventually(
        "the new secret to be known",
        Duration::from_secs(20),
        || (ts.token_basic(&b_id, &b_secret).status == 401).then_some(()),
    );
    for _ in 0..10 {
        assert_eq!(
            ts.token_basic(&b_id, &b_secret).status,
            401,
            "refused, not locked out"
        );
    }
    assert_eq!(ts.token_basic(&b_id, &b_new).status, 200);
    ts.assert_log_free_of(&[a_secret, b_secret, b_new, a_token]);
}

#[test]
fn signing_keys_are_published_before_they_sign_and_survive_restarts_and_deletion() {
    let (ns, _op, creds) = keys("token-keys", &[("k", "carol")]);
    let (id, secret) = creds[0].clone();
    ns.ok(&["label", "apikey", "k", "apikey.dev/introspect=true"]);
    let flags = [
        "--signing-key-rotation-seconds",
        "20",
        "--signing-key-publish-ahead-seconds",
        "10",
        "--token-lifetime-seconds",
        "60",
    ];
    let mut first = TokenServer::start(&ns.name, &flags);
    let second = TokenServer::replica(&first, &ns.name, &flags);

    // watch the JWKS (when each kid was first published) and the kid of each new token, until a
    // second key has signed
    let started = Instant::now();
    let mut published: Vec<(String, Instant)> = Vec::new();
    let mut signed: Vec<(String, Instant)> = Vec::new();
    let mut old_token = None;
    while signed.len() < 2 {
        assert!(
            started.elapsed() < Duration::from_secs(90),
            "no rotation in 90 s: {signed:?}"
        );
        for kid in first.jwks_kids() {
            if !published.iter().any(|(k, _)| *k == kid) {
                published.push((kid, Instant::now()));
            }
        }
        let token = second.access_token(&id, &secret);
        let kid = decode_jwt(&token).0["kid"]
            .as_str()
            .expect("kid")
            .to_string();
        if !signed.iter().any(|(k, _)| *k == kid) {
            signed.push((kid, Instant::now()));
        }
        old_token.get_or_insert(token);
        std::thread::sleep(Duration::from_millis(500));
    }
    let (new_kid, first_signed) = &signed[1];
    let (_, first_published) = published
        .iter()
        .find(|(k, _)| k == new_kid)
        .expect("the new key was published before it signed");
    assert!(
        first_signed.duration_since(*first_published) >= Duration::from_secs(9),
        "published {:?} before it signed",
        first_signed.duration_since(*first_published)
    );
    // a token signed before the rotation is still good, on both replicas
    let old_token = old_token.expect("a token");
    for server in [&first, &second] {
        let answer = server.introspect(&old_token, &id, &secret);
        assert_eq!(
            answer.body["active"], true,
            "{} from {}",
            answer.body, server.base
        );
    }
    // exactly one writer: the Lease names one of them
    let holder = ns.jsonpath("lease/apikey-token-signing", "{.spec.holderIdentity}");
    assert!(!holder.is_empty());

    // a restarted replica serves the same keys
    let before: Vec<String> = second.jwks_kids();
    first.restart();
    let after = first.jwks_kids();
    // (no key retires during the test: tokens live 60 s, plus 300 s of clock skew)
    for kid in &before {
        assert!(after.contains(kid), "{kid} lost in a restart");
    }
    // deleting the Secret loses no key a live token needs
    ns.ok(&[
        "delete",
        "secret",
        "apikey-token-signing-keys",
        "--wait=true",
    ]);
    let old_kid = decode_jwt(&old_token).0["kid"]
        .as_str()
        .expect("kid")
        .to_string();
    eventually(
        "the Secret to be written again",
        Duration::from_secs(30),
        || {
            let out = ns.jsonpath("secrets", "{.items[*].metadata.name}");
            out.contains("apikey-token-signing-keys").then_some(())
        },
    );
    first.restart();
    assert!(
        first.jwks_kids().contains(&old_kid),
        "the key of a live token was lost"
    );
    assert_eq!(
        first.introspect(&old_token, &id, &secret).body["active"],
        true
    );
    // until it expires (60 s after it was issued), then it is inactive
    let exp = decode_jwt(&old_token).1["exp"].as_i64().expect("exp");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs() as i64;
    assert!(now < exp, "the old token has not expired yet");
    eventually("the old token to expire", Duration::from_secs(90), || {
        (first.introspect(&old_token, &id, &secret).body["active"] == false).then_some(())
    });
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs() as i64;
    assert!(now >= exp, "inactive only once expired");
    first.assert_log_free_of(&[secret.clone(), old_token.clone()]);
    second.assert_log_free_of(&[secret, old_token]);
}

/// A certificate for 127.0.0.1 signed by the cluster's CA, with subject CN `cn`, into `dir` as
/// `tls.crt` and `tls.key`, each replaced in one rename (as the kubelet swaps a Secret volume).
fn issue_certificate(dir: &std::path::Path, cn: &str) {
    let pki = pki();
    let script = format!(
        "set -e; cd {dir}; openssl req -newkey rsa:2048 -nodes -keyout new.key -out new.csr -subj /CN={cn} 2>/dev/null; \
         printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\\nextendedKeyUsage=serverAuth\\n' > new.ext; \
         openssl x509 -req -in new.csr -CA {ca}/ca.crt -CAkey {ca}/ca.key -CAcreateserial -CAserial new.srl -out new.crt -days 2 -extfile new.ext 2>/dev/null; \
         mv new.key tls.key; mv new.crt tls.crt",
        dir = dir.display(),
        ca = pki.display(),
    );
    let out = Command::new("bash")
        .args(["-c", &script])
        .output()
        .expect("openssl runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn a_renewed_certificate_is_served_without_a_restart_and_a_broken_one_is_not() {
    install_crd();
    let ns = TempNamespace::new("token-tls");
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("tls-{}", ns.name));
    std::fs::create_dir_all(&dir).expect("tls dir");
    issue_certificate(&dir, "first");
    let mut ts = TokenServer::start_with_tls(&ns.name, &dir);
    assert!(
        ts.served_certificate().contains("first"),
        "{}",
        ts.served_certificate()
    );

    issue_certificate(&dir, "renewed");
    eventually(
        "the renewed certificate to be served",
        Duration::from_secs(30),
        || ts.served_certificate().contains("renewed").then_some(()),
    );
    // a half-written pair does not load: the renewed one is still served, and the server says why
    std::fs::write(dir.join("tls.crt"), "-----BEGIN CERTIFICATE-----\nbroken\n").expect("write");
    eventually(
        "the broken certificate to be refused",
        Duration::from_secs(30),
        || ts.log().contains("does not load").then_some(()),
    );
    assert!(ts.served_certificate().contains("renewed"));
    assert!(ts.is_running());
    assert_eq!(
        ts.jwks_kids().len(),
        2,
        "serving: the key that signs and the next one"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
