//! Who may drive the console: the one-time token of the printed URL, the session cookie it is
//! exchanged for, and the `Host` and `Origin` checks. Pure: no I/O beyond the random values that
//! [`Session::generate`] draws.
//!
//! The flow: `kubectl apikey console` prints `http://127.0.0.1:PORT/?token=T`; the first
//! `GET /?token=T` ([`Session::redeem`]) sets a cookie holding a different random value
//! (RFC 6265 §4.1, `HttpOnly; SameSite=Strict; Path=/`) and redirects to `/`, so the token leaves
//! the address bar and the history; a second redemption is refused. Every other request must
//! carry the cookie ([`Session::authenticated`]). `Host` must name the console's own address
//! (DNS rebinding: a foreign name resolving to 127.0.0.1 is refused, [`Session::host_allowed`]);
//! `Origin` (RFC 6454), required on every request that is not `GET` or `HEAD`, must be the
//! console's own ([`Session::origin_allowed`]).

use std::sync::atomic::{AtomicBool, Ordering};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use subtle::ConstantTimeEq as _;

use crate::Result;
use crate::credentials::random_bytes;

/// Bytes of randomness in the URL token and in the session cookie (256 bits each).
pub const SECRET_BYTES: usize = 32;

/// The console's credentials: the URL token (redeemable once) and the session cookie's value.
/// Its `Debug` shows neither.
pub struct Session {
    port: u16,
    token: String,
    cookie_value: String,
    redeemed: AtomicBool,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("port", &self.port)
            .field("redeemed", &self.redeemed.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

/// What [`Session::redeem`] decided.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Redemption {
    /// The token was right and unused: set this `Set-Cookie` value and redirect.
    Granted(String),
    /// The token was right but already exchanged for a cookie.
    AlreadyUsed,
    /// The token was wrong.
    Wrong,
}

impl Session {
    /// A session for the console listening on 127.0.0.1:`port`, with a URL token and a cookie
    /// value of [`SECRET_BYTES`] each from the operating system's CSPRNG, base64url without
    /// padding (43 characters). Errors: the random number generator failed.
    pub fn generate(port: u16) -> Result<Self> {
        let token = URL_SAFE_NO_PAD.encode(random_bytes::<SECRET_BYTES>()?);
        let cookie = URL_SAFE_NO_PAD.encode(random_bytes::<SECRET_BYTES>()?);
        Ok(Self::with_secrets(port, token, cookie))
    }

    /// A session with the given token and cookie value (tests choose them).
    pub fn with_secrets(port: u16, token: String, cookie_value: String) -> Self {
        Self {
            port,
            token,
            cookie_value,
            redeemed: AtomicBool::new(false),
        }
    }

    /// The URL to open: `http://127.0.0.1:PORT/?token=TOKEN`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}/?token={}", self.port, self.token)
    }

    /// Name of the session cookie: `apikey-console-PORT`. Cookies do not keep ports apart
    /// (RFC 6265 §8.5), so two consoles open in one browser need names of their own.
    pub fn cookie_name(&self) -> String {
        format!("apikey-console-{}", self.port)
    }

    /// Exchanges `presented` (the `token` query parameter) for the session cookie, once.
    /// Compared in constant time.
    pub fn redeem(&self, presented: &str) -> Redemption {
        if !bool::from(presented.as_bytes().ct_eq(self.token.as_bytes())) {
            return Redemption::Wrong;
        }
        if self.redeemed.swap(true, Ordering::SeqCst) {
            return Redemption::AlreadyUsed;
        }
        Redemption::Granted(format!(
            "{}={}; HttpOnly; SameSite=Strict; Path=/",
            self.cookie_name(),
            self.cookie_value
        ))
    }

    /// Whether one of `cookie_headers` (the values of the request's `Cookie` headers,
    /// `name=value; name2=value2`, RFC 6265 §4.2) holds the session cookie. Compared in
    /// constant time.
    pub fn authenticated<'a>(&self, cookie_headers: impl IntoIterator<Item = &'a str>) -> bool {
        let name = self.cookie_name();
        cookie_headers
            .into_iter()
            .flat_map(|header| header.split(';'))
            .filter_map(|pair| pair.trim().split_once('='))
            .filter(|(n, _)| *n == name)
            .any(|(_, value)| bool::from(value.as_bytes().ct_eq(self.cookie_value.as_bytes())))
    }

    /// Whether `host` (the `Host` header) names this console: `127.0.0.1:PORT` or
    /// `localhost:PORT`, nothing else (a rebinding DNS name, another port, no header).
    pub fn host_allowed(&self, host: Option<&str>) -> bool {
        host.is_some_and(|h| {
            h.eq_ignore_ascii_case(&format!("127.0.0.1:{}", self.port))
                || h.eq_ignore_ascii_case(&format!("localhost:{}", self.port))
        })
    }

    /// Whether a request with `origin` (the `Origin` header) may proceed: a safe method (`GET`,
    /// `HEAD`) may come without one; any `Origin` present must be `http://127.0.0.1:PORT` or
    /// `http://localhost:PORT` (an opaque `null` origin is refused).
    pub fn origin_allowed(&self, safe_method: bool, origin: Option<&str>) -> bool {
        match origin {
            None => safe_method,
            Some(o) => {
                o.eq_ignore_ascii_case(&format!("http://127.0.0.1:{}", self.port))
                    || o.eq_ignore_ascii_case(&format!("http://localhost:{}", self.port))
            }
        }
    }
}

/// The `token` parameter of a URL query (`token=...&...`, form-urlencoded), if present.
pub fn token_of(query: Option<&str>) -> Option<String> {
    form_urlencoded::parse(query?.as_bytes())
        .find(|(k, _)| k == "token")
        .map(|(_, v)| v.into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn session() -> Session {
        Session::with_secrets(8123, "tok".into(), "cookie".into())
    }

    #[test]
    fn the_token_is_redeemed_once_for_a_strict_http_only_cookie() {
        let s = session();
        assert_eq!(s.redeem("wrong"), Redemption::Wrong);
        assert_eq!(s.redeem(""), Redemption::Wrong);
        assert_eq!(
            s.redeem("tok"),
            Redemption::Granted(
                "apikey-console-8123=cookie; HttpOnly; SameSite=Strict; Path=/".into()
            )
        );
        assert_eq!(s.redeem("tok"), Redemption::AlreadyUsed);
        assert_eq!(s.redeem("wrong"), Redemption::Wrong);
    }

    #[test]
    fn only_the_session_cookie_authenticates() {
        let s = session();
        assert!(s.authenticated(["apikey-console-8123=cookie"]));
        assert!(s.authenticated(["a=b; apikey-console-8123=cookie; c=d"]));
        assert!(s.authenticated(["a=b", "apikey-console-8123=cookie"]));
        assert!(!s.authenticated([]));
        assert!(!s.authenticated(["apikey-console-8123=cookie2"]));
        assert!(!s.authenticated(["apikey-console-8123=cooki"]));
        assert!(!s.authenticated(["apikey-console-8124=cookie"]));
        assert!(!s.authenticated(["apikey-console-8123=tok"]));
        assert!(!s.authenticated(["apikey-console-8123"]));
    }

    #[test]
    fn host_must_be_the_consoles_own_address() {
        let s = session();
        assert!(s.host_allowed(Some("127.0.0.1:8123")));
        assert!(s.host_allowed(Some("localhost:8123")));
        assert!(s.host_allowed(Some("LOCALHOST:8123")));
        assert!(!s.host_allowed(Some("127.0.0.1:8124")));
        assert!(!s.host_allowed(Some("127.0.0.1")));
        assert!(!s.host_allowed(Some("evil.example:8123")));
        assert!(!s.host_allowed(Some("127.0.0.1.evil.example:8123")));
        assert!(!s.host_allowed(None));
    }

    #[test]
    fn origin_is_required_on_unsafe_methods_and_must_be_ours() {
        let s = session();
        assert!(s.origin_allowed(true, None));
        assert!(!s.origin_allowed(false, None));
        for safe in [true, false] {
            assert!(s.origin_allowed(safe, Some("http://127.0.0.1:8123")));
            assert!(s.origin_allowed(safe, Some("http://localhost:8123")));
            assert!(!s.origin_allowed(safe, Some("https://127.0.0.1:8123")));
            assert!(!s.origin_allowed(safe, Some("http://127.0.0.1:8124")));
            assert!(!s.origin_allowed(safe, Some("http://evil.example")));
            assert!(!s.origin_allowed(safe, Some("null")));
        }
    }

    #[test]
    fn generated_secrets_are_long_distinct_and_the_url_carries_only_the_token() {
        let s = Session::generate(8123).unwrap();
        assert_eq!(s.token.len(), 43);
        assert_eq!(s.cookie_value.len(), 43);
        assert_ne!(s.token, s.cookie_value);
        assert_eq!(s.url(), format!("http://127.0.0.1:8123/?token={}", s.token));
        assert!(!format!("{s:?}").contains(&s.token));
        assert!(!format!("{s:?}").contains(&s.cookie_value));
        assert_eq!(token_of(Some("token=a%2Bb&x=1")).as_deref(), Some("a+b"));
        assert_eq!(token_of(Some("x=1")), None);
        assert_eq!(token_of(None), None);
    }
}
