//! Who may drive the console: the one-time token of the printed URL, the session secret it is
//! exchanged for, and the `Host` and `Origin` checks. Pure: no I/O beyond the random values that
//! [`Session::generate`] draws.
//!
//! No cookies: a browser sends a cookie of 127.0.0.1 to every port of 127.0.0.1 (RFC 6265
//! §8.5), so a page another local user serves on another port would receive it. Instead:
//!
//! 1. `kubectl apikey console` prints `http://127.0.0.1:PORT/#token=T`. The fragment never
//!    reaches a server, a log or a `Referer`.
//! 2. The page (served to anyone who may reach the port: it holds nothing secret) reads `T`, clears
//!    it from the address bar and the history, and posts it once to `/api/session`
//!    ([`Session::redeem`], constant-time, one-time: a second redemption and a wrong token get
//!    one and the same refusal).
//! 3. It receives the session secret, keeps it in `sessionStorage` (one origin, port included,
//!    one tab) and sends it as `Authorization: Bearer SECRET` on every `/api` request
//!    ([`Session::authorized`]). A browser never adds that header by itself, and another origin
//!    cannot read this origin's storage.
//!
//! On every request `Host` must name the console's own address (DNS rebinding: a foreign name
//! resolving to 127.0.0.1 is refused, [`Session::host_allowed`]); `Origin` (RFC 6454), required
//! on every request that is not `GET` or `HEAD`, must be the console's own
//! ([`Session::origin_allowed`]).

use std::sync::atomic::{AtomicBool, Ordering};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use subtle::ConstantTimeEq as _;

use crate::Result;
use crate::core::credentials::random_bytes;

/// Bytes of randomness in the URL token and in the session secret (256 bits each).
pub const SECRET_BYTES: usize = 32;

/// The console's credentials: the URL token (redeemable once) and the session secret. Its
/// `Debug` shows neither.
pub struct Session {
    port: u16,
    token: String,
    secret: String,
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

impl Session {
    /// A session for the console listening on 127.0.0.1:`port`, with a URL token and a session
    /// secret of [`SECRET_BYTES`] each from the operating system's CSPRNG, base64url without
    /// padding (43 characters). Errors: the random number generator failed.
    pub fn generate(port: u16) -> Result<Self> {
        let token = URL_SAFE_NO_PAD.encode(random_bytes::<SECRET_BYTES>()?);
        let secret = URL_SAFE_NO_PAD.encode(random_bytes::<SECRET_BYTES>()?);
        Ok(Self::with_secrets(port, token, secret))
    }

    /// A session with the given token and session secret (tests choose them).
    pub fn with_secrets(port: u16, token: String, secret: String) -> Self {
        Self {
            port,
            token,
            secret,
            redeemed: AtomicBool::new(false),
        }
    }

    /// The URL to open: `http://127.0.0.1:PORT/#token=TOKEN`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}/#token={}", self.port, self.token)
    }

    /// Exchanges `presented` (the token of the URL's fragment) for the session secret, once.
    /// Compared in constant time. `None` for a wrong token and for a token already exchanged
    /// alike; a wrong token does not use up the right one.
    pub fn redeem(&self, presented: &str) -> Option<&str> {
        if !bool::from(presented.as_bytes().ct_eq(self.token.as_bytes())) {
            return None;
        }
        (!self.redeemed.swap(true, Ordering::SeqCst)).then_some(self.secret.as_str())
    }

    /// Whether `authorization` (the `Authorization` header) is `Bearer SECRET` (RFC 6750 §2.1;
    /// the scheme's case does not matter) with this session's secret. Compared in constant time.
    pub fn authorized(&self, authorization: Option<&str>) -> bool {
        authorization
            .and_then(|value| value.split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .is_some_and(|(_, secret)| {
                bool::from(secret.trim().as_bytes().ct_eq(self.secret.as_bytes()))
            })
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

#[cfg(test)]
mod tests {
    use super::*;

    fn session() -> Session {
        Session::with_secrets(8123, "tok".into(), "secret".into())
    }

    #[test]
    fn the_token_is_redeemed_once_and_wrong_or_used_tokens_look_alike() {
        let s = session();
        assert_eq!(s.redeem("wrong"), None);
        assert_eq!(s.redeem(""), None);
        assert_eq!(
            s.redeem("tok"),
            Some("secret"),
            "a wrong try did not use it up"
        );
        assert_eq!(s.redeem("tok"), None);
        assert_eq!(s.redeem("wrong"), None);
    }

    #[test]
    fn only_the_session_secret_as_a_bearer_authorizes() {
        let s = session();
        assert!(s.authorized(Some("Bearer secret")));
        assert!(s.authorized(Some("bearer secret")));
        assert!(!s.authorized(None));
        assert!(!s.authorized(Some("")));
        assert!(!s.authorized(Some("Bearer")));
        assert!(!s.authorized(Some("Bearer ")));
        assert!(!s.authorized(Some("Bearer secre")));
        assert!(!s.authorized(Some("Bearer secret2")));
        assert!(!s.authorized(Some("Bearer tok")));
        assert!(!s.authorized(Some("Basic secret")));
        assert!(!s.authorized(Some("secret")));
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
    fn generated_secrets_are_long_distinct_and_the_url_carries_the_token_in_its_fragment() {
        let s = Session::generate(8123).unwrap();
        assert_eq!(s.token.len(), 43);
        assert_eq!(s.secret.len(), 43);
        assert_ne!(s.token, s.secret);
        assert_eq!(s.url(), format!("http://127.0.0.1:8123/#token={}", s.token));
        assert!(!format!("{s:?}").contains(&s.token));
        assert!(!format!("{s:?}").contains(&s.secret));
    }
}
