//! Unit tests of the signing keys ([`super`]): key pairs, JWS signing and verification, storage, and the schedule's invariants over a timeline.

use std::collections::BTreeMap;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use p256::pkcs8::DecodePrivateKey as _;

use super::jws::thumbprint;
use super::*;

const ISS: &str = "https://tokens.example";
const AUD: &str = "api";

/// A fixed key: scalar 0x0102…20. Its public key and thumbprint were computed independently
/// with Python's `cryptography` package (derive_private_key, then the RFC 7638 JSON by
/// `json.dumps(sort_keys=True, separators=(",", ":"))`, SHA-256, base64url).
const FIXED_X: &str = "UVw9brnjlrkE0_7Kf1T9zQzB6Ze_N13KUVrQpsO0A18";
const FIXED_Y: &str = "RTa-OlDzGPv5pUdZAqIhUCvvDVfgjFOyzApW8X2fk1Q";
const FIXED_KID: &str = "6UoWwDCkLjV0J-pQG8c0THxbVhBcpR0AZDift1Yl5DM";
/// The same key as PKCS#8 DER, written by Python's `cryptography` (OpenSSL).
const FIXED_PKCS8: &str = "MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgAQIDBAUGBwgJCgsMDQ4PEBESExQVFhcYGRobHB0eHyChRANCAARRXD1uueOWuQTT/sp/VP3NDMHpl783XcpRWtCmw7QDX0U2vjpQ8xj7+aVHWQKiIVAr7w1X4IxTsswKVvF9n5NU";

fn fixed_key(created_at: i64, active_from: i64) -> SigningKey {
    let scalar: Vec<u8> = (1..=32).collect();
    let secret = p256::SecretKey::from_slice(&scalar).expect("a valid scalar");
    SigningKey::from_secret(&secret, created_at, active_from).expect("a valid key")
}

fn claims(now: i64, lifetime: i64) -> Value {
    json!({"iss": ISS, "aud": AUD, "sub": "alice", "iat": now, "exp": now + lifetime})
}

fn schedule() -> Schedule {
    Schedule {
        rotation_seconds: 100,
        publish_ahead_seconds: 30,
        retire_after_seconds: 75,
    }
}

/// A token with this header and payload, signed by `key` (ES256 whatever `alg` says).
fn forge(key: &SigningKey, header: &Value, payload: &Value) -> String {
    use p256::ecdsa::signature::Signer as _;
    let der = key.encoding.as_bytes();
    let signing = p256::ecdsa::SigningKey::from_pkcs8_der(der).expect("key");
    let message = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(payload.to_string())
    );
    let signature: p256::ecdsa::Signature = signing.sign(message.as_bytes());
    format!("{message}.{}", URL_SAFE_NO_PAD.encode(signature.to_bytes()))
}

fn header_of(token: &str) -> Value {
    let part = token.split('.').next().expect("header");
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(part).expect("base64")).expect("json")
}

#[test]
fn thumbprint_matches_an_independent_computation() {
    let key = fixed_key(0, 0);
    assert_eq!(key.x, FIXED_X);
    assert_eq!(key.y, FIXED_Y);
    assert_eq!(key.kid(), FIXED_KID);
    assert_eq!(thumbprint(FIXED_X, FIXED_Y), FIXED_KID);
}

#[test]
fn reads_a_pkcs8_key_written_by_another_implementation() {
    let data = json!({"version": 1, "keys": [{
        "kid": FIXED_KID, "created_at": 5, "active_from": 7, "private_key_pkcs8": FIXED_PKCS8,
    }]});
    let set = KeySet::from_secret_data(data.to_string().as_bytes()).expect("valid document");
    assert_eq!(set.len(), 1);
    assert_eq!(set.keys()[0], fixed_key(5, 7));
}

#[test]
fn generated_keys_differ_and_have_thumbprint_kids() {
    let a = SigningKey::generate(1, 2).expect("key");
    let b = SigningKey::generate(1, 2).expect("key");
    assert_ne!(a.kid(), b.kid());
    assert_eq!(a.kid().len(), 43);
    assert_eq!(a.kid(), thumbprint(&a.x, &a.y));
    assert_eq!((a.created_at(), a.active_from()), (1, 2));
}

#[test]
fn debug_shows_no_private_material() {
    let key = fixed_key(0, 0);
    let set = KeySet::new(vec![key.clone()]).expect("set");
    let der_b64 = STANDARD.encode(key.encoding.as_bytes());
    for text in [format!("{key:?}"), format!("{set:?}"), format!("{key:#?}")] {
        assert!(text.contains(FIXED_KID), "{text}");
        assert!(!text.contains(&der_b64[..16]), "{text}");
        assert!(!text.contains("1, 2, 3, 4"), "{text}");
        assert!(!text.contains("encoding"), "{text}");
    }
}

#[test]
fn jwks_lists_every_key_with_its_public_parts() {
    let set = KeySet::new(vec![fixed_key(0, 100), fixed_key_2(0, 0)]).expect("set");
    let jwks = set.jwks();
    let keys = jwks["keys"].as_array().expect("keys");
    assert_eq!(keys.len(), 2);
    // ordered by active_from: the fixed key (active from 100) is second
    assert_eq!(
        keys[1],
        json!({"kty": "EC", "crv": "P-256", "x": FIXED_X, "y": FIXED_Y, "kid": FIXED_KID,
               "use": "sig", "alg": "ES256"})
    );
    for jwk in keys {
        assert!(jwk.get("d").is_none());
        assert_eq!(jwk.as_object().map(|o| o.len()), Some(7));
    }
}

fn fixed_key_2(created_at: i64, active_from: i64) -> SigningKey {
    let scalar = [7u8; 32];
    let secret = p256::SecretKey::from_slice(&scalar).expect("a valid scalar");
    SigningKey::from_secret(&secret, created_at, active_from).expect("a valid key")
}

#[test]
fn signer_is_the_newest_active_key() {
    let set = KeySet::new(vec![
        fixed_key(0, 200),
        fixed_key_2(0, 100),
        SigningKey::generate(0, 300).expect("key"),
    ])
    .expect("set");
    assert!(set.signer(99).is_none());
    assert_eq!(
        set.signer(100).map(SigningKey::kid),
        Some(fixed_key_2(0, 0).kid())
    );
    assert_eq!(set.signer(299).map(SigningKey::kid), Some(FIXED_KID));
    assert_eq!(set.signer(300), set.keys().last());
    assert!(set.sign(&claims(50, 60), 50).is_err());
}

#[test]
fn duplicate_kids_are_refused() {
    assert!(KeySet::new(vec![fixed_key(0, 0), fixed_key(1, 1)]).is_err());
}

#[test]
fn sign_then_verify() {
    let set = KeySet::new(vec![fixed_key(0, 0)]).expect("set");
    let token = set.sign(&claims(1000, 60), 1000).expect("signed");
    assert_eq!(
        header_of(&token),
        json!({"alg": "ES256", "typ": "at+jwt", "kid": FIXED_KID})
    );
    let got: Value = set.verify(&token, ISS, AUD, 1000).expect("valid");
    assert_eq!(got, claims(1000, 60));
    let got: Value = set.verify(&token, ISS, AUD, 1059).expect("valid until exp");
    assert_eq!(got["sub"], "alice");
    // into a typed claims struct
    #[derive(Deserialize)]
    struct Sub {
        sub: String,
    }
    let typed: Sub = set.verify(&token, ISS, AUD, 1000).expect("valid");
    assert_eq!(typed.sub, "alice");
}

#[test]
fn verify_refuses_what_it_must() {
    let key = fixed_key(0, 0);
    let other = fixed_key_2(0, 0);
    let set = KeySet::new(vec![key.clone()]).expect("set");
    let good_header = json!({"alg": "ES256", "typ": "at+jwt", "kid": FIXED_KID});
    let payload = claims(1000, 60);
    let verify = |token: &str| set.verify::<Value>(token, ISS, AUD, 1000);

    // the forging helper makes valid tokens, and typ compares case-insensitively
    assert!(verify(&forge(&key, &good_header, &payload)).is_ok());
    for typ in ["AT+JWT", "application/at+jwt"] {
        let header = json!({"alg": "ES256", "typ": typ, "kid": FIXED_KID});
        assert!(verify(&forge(&key, &header, &payload)).is_ok(), "{typ}");
    }

    for typ in [json!("JWT"), json!(null), json!("at+jwt2")] {
        let header = json!({"alg": "ES256", "typ": typ, "kid": FIXED_KID});
        assert_eq!(
            verify(&forge(&key, &header, &payload)),
            Err(VerifyError::WrongType),
            "{typ}"
        );
    }
    let no_typ = json!({"alg": "ES256", "kid": FIXED_KID});
    assert_eq!(
        verify(&forge(&key, &no_typ, &payload)),
        Err(VerifyError::WrongType)
    );
    for alg in ["ES384", "HS256", "RS256"] {
        let header = json!({"alg": alg, "typ": "at+jwt", "kid": FIXED_KID});
        assert_eq!(
            verify(&forge(&key, &header, &payload)),
            Err(VerifyError::WrongAlgorithm),
            "{alg}"
        );
    }
    let none = json!({"alg": "none", "typ": "at+jwt", "kid": FIXED_KID});
    assert!(verify(&forge(&key, &none, &payload)).is_err());

    // a key not in the set, a missing kid, a kid of the set on another key's signature
    let by_other = other.sign(&payload).expect("signed");
    assert_eq!(verify(&by_other), Err(VerifyError::UnknownKey));
    let no_kid = json!({"alg": "ES256", "typ": "at+jwt"});
    assert_eq!(
        verify(&forge(&key, &no_kid, &payload)),
        Err(VerifyError::UnknownKey)
    );
    assert_eq!(
        verify(&forge(&other, &good_header, &payload)),
        Err(VerifyError::BadSignature)
    );

    let token = key.sign(&payload).expect("signed");
    assert_eq!(
        set.verify::<Value>(&token, "https://other", AUD, 1000),
        Err(VerifyError::WrongIssuer)
    );
    assert_eq!(
        set.verify::<Value>(&token, ISS, "other", 1000),
        Err(VerifyError::WrongAudience)
    );
    assert_eq!(
        set.verify::<Value>(&token, ISS, AUD, 1060),
        Err(VerifyError::Expired)
    );
    assert_eq!(
        set.verify::<Value>(&token, ISS, AUD, 5000),
        Err(VerifyError::Expired)
    );

    // aud as an array naming the audience is accepted; missing claims are not
    let listed = json!({"iss": ISS, "aud": ["x", AUD], "exp": 2000});
    assert!(verify(&forge(&key, &good_header, &listed)).is_ok());
    for missing in ["iss", "aud", "exp"] {
        let mut partial = payload.clone();
        partial.as_object_mut().map(|o| o.remove(missing));
        assert!(
            verify(&forge(&key, &good_header, &partial)).is_err(),
            "{missing}"
        );
    }
    let text_exp = json!({"iss": ISS, "aud": AUD, "exp": "2000"});
    assert_eq!(
        verify(&forge(&key, &good_header, &text_exp)),
        Err(VerifyError::InvalidClaims)
    );
    let future = json!({"iss": ISS, "aud": AUD, "exp": 2000, "nbf": 1001});
    assert_eq!(
        verify(&forge(&key, &good_header, &future)),
        Err(VerifyError::NotYetValid)
    );

    // malformed
    for bad in [
        "",
        "a.b",
        "a.b.c",
        "not a token",
        "..",
        &token[..token.len() / 2],
    ] {
        assert!(verify(bad).is_err(), "{bad}");
    }
}

#[test]
fn a_tampered_token_is_refused() {
    let key = fixed_key(0, 0);
    let set = KeySet::new(vec![key.clone()]).expect("set");
    let token = key.sign(&claims(1000, 60)).expect("signed");
    let (message, signature) = token.rsplit_once('.').expect("three parts");

    // one character of the signature changed (still base64url of 64 bytes)
    let mut sig: Vec<char> = signature.chars().collect();
    let middle = sig.len() / 2;
    sig[middle] = if sig[middle] == 'A' { 'B' } else { 'A' };
    let tampered = format!("{message}.{}", sig.into_iter().collect::<String>());
    assert_eq!(
        set.verify::<Value>(&tampered, ISS, AUD, 1000),
        Err(VerifyError::BadSignature)
    );

    // the payload changed, signature kept
    let (header, _) = message.split_once('.').expect("two parts");
    let mut other_claims = claims(1000, 60);
    other_claims["sub"] = json!("mallory");
    let swapped = format!(
        "{header}.{}.{signature}",
        URL_SAFE_NO_PAD.encode(other_claims.to_string())
    );
    assert_eq!(
        set.verify::<Value>(&swapped, ISS, AUD, 1000),
        Err(VerifyError::BadSignature)
    );

    // no signature
    assert!(
        set.verify::<Value>(&format!("{message}."), ISS, AUD, 1000)
            .is_err()
    );
}

#[test]
fn serialisation_roundtrip() {
    let set = KeySet::new(vec![
        fixed_key(10, 20),
        SigningKey::generate(10, 120).expect("key"),
    ])
    .expect("set");
    let data = set.to_secret_data().expect("serialised");
    let back = KeySet::from_secret_data(&data).expect("read back");
    assert_eq!(back, set);
    // the keys read back sign tokens the original set verifies, and the reverse
    let token = back.sign(&claims(200, 60), 200).expect("signed");
    assert!(set.verify::<Value>(&token, ISS, AUD, 200).is_ok());
    let token = set.sign(&claims(50, 60), 50).expect("signed");
    assert!(back.verify::<Value>(&token, ISS, AUD, 50).is_ok());

    let document: Value = serde_json::from_slice(&data).expect("json");
    assert_eq!(document["version"], 1);
    assert_eq!(document["keys"][0]["kid"], FIXED_KID);
    assert_eq!(document["keys"][0]["created_at"], 10);
    assert_eq!(document["keys"][0]["active_from"], 20);
    // the PKCS#8 DER of the key, as OpenSSL would write it
    assert_eq!(document["keys"][0]["private_key_pkcs8"], FIXED_PKCS8);

    let empty = KeySet::default().to_secret_data().expect("serialised");
    assert!(KeySet::from_secret_data(&empty).expect("read").is_empty());
}

#[test]
fn a_damaged_document_is_refused_without_leaking_key_material() {
    let set = KeySet::new(vec![fixed_key(10, 20)]).expect("set");
    let data = String::from_utf8(set.to_secret_data().expect("serialised")).expect("utf8");
    let secret_part = &FIXED_PKCS8[40..];
    let damaged_body = FIXED_PKCS8.replacen('M', "*", 1);
    let cases: BTreeMap<&str, String> = BTreeMap::from([
        ("not json", "{".to_string()),
        ("truncated", data[..data.len() - 30].to_string()),
        ("not base64", data.replace(FIXED_PKCS8, &damaged_body)),
        (
            "not a key",
            data.replace(FIXED_PKCS8, &STANDARD.encode(b"hello")),
        ),
        (
            "truncated key",
            data.replace(FIXED_PKCS8, &FIXED_PKCS8[..FIXED_PKCS8.len() - 8]),
        ),
        (
            "key in a number field",
            data.replace(
                "\"created_at\":10",
                &format!("\"created_at\":\"{FIXED_PKCS8}\""),
            ),
        ),
        ("key as kid", data.replace(FIXED_KID, FIXED_PKCS8)),
        (
            "other kid",
            data.replace(FIXED_KID, &FIXED_KID.replace('6', "7")),
        ),
        ("version", data.replace("\"version\":1", "\"version\":2")),
        (
            "duplicate",
            format!(
                r#"{{"version":1,"keys":[{k},{k}]}}"#,
                k = json!({"kid": FIXED_KID, "created_at": 1, "active_from": 1, "private_key_pkcs8": FIXED_PKCS8})
            ),
        ),
    ]);
    for (case, document) in &cases {
        assert_ne!(document, &data, "{case}: the damage applied");
        let error = KeySet::from_secret_data(document.as_bytes())
            .expect_err(case)
            .to_string();
        assert!(!error.contains(secret_part), "{case}: {error}");
        assert!(!error.contains(&FIXED_PKCS8[..20]), "{case}: {error}");
        assert!(!error.contains(&damaged_body[40..]), "{case}: {error}");
    }
    // the kid mismatch names the key by its computed thumbprint
    let error = KeySet::from_secret_data(cases["other kid"].as_bytes())
        .expect_err("mismatch")
        .to_string();
    assert!(error.contains(FIXED_KID), "{error}");
}

#[test]
fn schedule_validation() {
    assert!(schedule().validate().is_ok());
    let bad = [
        Schedule {
            rotation_seconds: 0,
            ..schedule()
        },
        Schedule {
            retire_after_seconds: 0,
            ..schedule()
        },
        Schedule {
            publish_ahead_seconds: 101,
            ..schedule()
        },
        Schedule {
            rotation_seconds: u64::MAX,
            publish_ahead_seconds: 1,
            retire_after_seconds: 1,
        },
    ];
    for s in bad {
        assert!(matches!(s.validate(), Err(Error::Config(_))), "{s:?}");
        assert!(KeySet::default().plan(0, &s).is_err(), "{s:?}");
    }
    let equal = Schedule {
        publish_ahead_seconds: 100,
        ..schedule()
    };
    assert!(equal.validate().is_ok());
    assert_eq!(
        Schedule::for_tokens(3600, 600, 900, 60).retire_after_seconds,
        960
    );
    assert_eq!(schedule().max_keys(), 3);
    assert_eq!(
        Schedule {
            retire_after_seconds: 250,
            ..schedule()
        }
        .max_keys(),
        5
    );
}

#[test]
fn plan_from_empty_and_steady_state() {
    let s = schedule();
    let set = KeySet::default()
        .plan(1000, &s)
        .expect("plan")
        .expect("a change");
    assert_eq!(set.len(), 2);
    assert_eq!(set.keys()[0].active_from(), 1000);
    assert_eq!(set.keys()[1].active_from(), 1100);
    assert!(set.keys().iter().all(|k| k.created_at() == 1000));
    assert_eq!(set.signer(1000), set.keys().first());
    // nothing to do until the next key signs
    for now in [1000, 1050, 1099] {
        assert!(set.plan(now, &s).expect("plan").is_none(), "{now}");
    }
    // the next key signs: a new next key a rotation later, the old one kept
    let set2 = set.plan(1100, &s).expect("plan").expect("a change");
    assert_eq!(set2.len(), 3);
    assert_eq!(set2.keys()[2].active_from(), 1200);
    assert_eq!(&set2.keys()[..2], set.keys());
    // the first key is retired once its successor has signed for retire_after
    assert!(set2.plan(1174, &s).expect("plan").is_none());
    let set3 = set2.plan(1175, &s).expect("plan").expect("a change");
    assert_eq!(set3.keys(), &set2.keys()[1..]);
}

#[test]
fn plan_after_a_writer_outage_still_publishes_ahead() {
    let s = schedule();
    let set = KeySet::default()
        .plan(1000, &s)
        .expect("plan")
        .expect("change");
    // nobody ran the schedule from 1000 to 1390: the second key signs since 1100
    let later = set.plan(1390, &s).expect("plan").expect("change");
    let next = later.keys().last().expect("next");
    assert_eq!(next.active_from(), 1390 + 30);
    // the first key went (its successor has signed since 1100 + 75 <= 1390); the second
    // still signs until the next key starts, which was published 30 s ahead
    assert_eq!(later.len(), 2);
    assert_eq!(later.signer(1419), set.keys().get(1));
}

#[test]
fn plan_never_drops_the_signer_or_future_keys() {
    let s = schedule();
    // keys far in the past: the newest still signs and stays
    let set = KeySet::new(vec![fixed_key(0, 0), fixed_key_2(0, 10)]).expect("set");
    let next = set.plan(100_000, &s).expect("plan").expect("change");
    assert!(next.get(fixed_key_2(0, 0).kid()).is_some());
    assert!(next.get(FIXED_KID).is_none());
    assert_eq!(
        next.signer(100_000).map(SigningKey::kid),
        Some(fixed_key_2(0, 0).kid())
    );
    // only future keys: nothing is added, nothing dropped, nothing signs yet
    let future = KeySet::new(vec![fixed_key(0, 500), fixed_key_2(0, 600)]).expect("set");
    assert!(future.plan(100, &s).expect("plan").is_none());
}

/// Simulates the one writer running `plan` every `tick` seconds (with an outage) and a
/// server signing a token every tick, and checks the module's invariants throughout.
fn simulate(s: Schedule, tick: i64, outage: std::ops::Range<i64>, end: i64) {
    let lifetime: i64 = 60;
    assert!(s.retire_after_seconds as i64 >= lifetime);
    let start = 1_000_000;
    let mut set = KeySet::default();
    let mut first_seen: BTreeMap<String, i64> = BTreeMap::new();
    let mut tokens: Vec<(i64, String, String)> = Vec::new();
    let mut first_kid = None;
    let mut rotations = 0;
    let mut now = start;
    while now <= start + end {
        let offset = now - start;
        if !outage.contains(&offset)
            && let Some(next) = set.plan(now, &s).expect("plan")
        {
            set = next;
            // after a change, every live token verifies with the new set
            for (issued, kid, token) in &tokens {
                if now < issued + lifetime {
                    let got = set.verify::<Value>(token, ISS, AUD, now);
                    assert!(
                        got.is_ok(),
                        "token by {kid} at {issued}, now {now}: {got:?}"
                    );
                }
            }
        }
        for key in set.keys() {
            first_seen.entry(key.kid().to_string()).or_insert(now);
        }
        assert!(
            set.len() as u64 <= s.max_keys(),
            "{} keys at {now}: {set:?}",
            set.len()
        );
        let signer = set.signer(now).expect("a signer").clone();
        let first = first_kid.get_or_insert_with(|| signer.kid().to_string());
        // every key but the first was published at least publish_ahead before it signs
        for key in set.keys().iter().filter(|k| k.kid() != first.as_str()) {
            let seen = first_seen[key.kid()];
            assert!(
                key.active_from() - seen >= s.publish_ahead_seconds as i64,
                "{} seen at {seen}, active from {}",
                key.kid(),
                key.active_from()
            );
        }
        assert!(signer.active_from() <= now);
        if tokens.last().is_none_or(|(_, kid, _)| kid != signer.kid()) {
            rotations += 1;
        }
        let token = set.sign(&claims(now, lifetime), now).expect("signed");
        tokens.push((now, signer.kid().to_string(), token));
        // every live token's key is still published
        for (issued, kid, _) in &tokens {
            if now < issued + lifetime {
                assert!(
                    set.get(kid).is_some(),
                    "{kid} of a token at {issued} gone at {now}"
                );
            }
        }
        tokens.retain(|(issued, _, _)| now < issued + lifetime);
        now += tick;
    }
    assert!(
        rotations >= end / s.rotation_seconds as i64 / 2,
        "{rotations} rotations"
    );
}

#[test]
fn schedule_invariants_over_a_timeline() {
    let s = schedule();
    simulate(s, 7, 0..0, 1_000);
    // retire_after longer than the rotation
    simulate(
        Schedule {
            retire_after_seconds: 250,
            ..s
        },
        10,
        0..0,
        1_000,
    );
    // publish ahead a whole rotation
    simulate(
        Schedule {
            publish_ahead_seconds: 100,
            ..s
        },
        9,
        0..0,
        800,
    );
    // the writer is down for a while
    simulate(s, 7, 300..560, 1_000);
}
