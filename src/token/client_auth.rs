//! Reading a token request: the form of the client credentials grant (RFC 6749 §4.4.2) and the
//! client's authentication, `client_secret_basic` or `client_secret_post` (RFC 6749 §2.3.1), and
//! the errors the token endpoint answers with (RFC 6749 §5.2). Pure: no HTTP server, no cluster.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

use crate::core::credentials::ClientSecret;

/// The only grant type the token endpoint serves (RFC 6749 §4.4.2).
pub const CLIENT_CREDENTIALS: &str = "client_credentials";
/// The request body's media type (RFC 6749 §4.4.2, Appendix B).
pub const FORM_CONTENT_TYPE: &str = "application/x-www-form-urlencoded";

/// How the client authenticated (RFC 6749 §2.3.1; the names are RFC 7591 §2's).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AuthMethod {
    /// HTTP Basic with the client id and secret, each form-urlencoded first.
    ClientSecretBasic,
    /// `client_id` and `client_secret` in the request body.
    ClientSecretPost,
}

/// A well-formed client credentials request: who claims to be asking, and how. The secret is not
/// checked here.
#[derive(Debug)]
pub struct TokenRequest {
    /// The client id presented.
    pub client_id: String,
    /// The client secret presented.
    pub client_secret: ClientSecret,
    /// How they were presented.
    pub method: AuthMethod,
    /// The `scope` parameter, if any (RFC 6749 §3.3).
    pub scope: Option<String>,
}

/// An error of the token endpoint (RFC 6749 §5.2), answered as a JSON body with `error` and
/// `error_description`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OAuthError {
    /// The request is missing a parameter, repeats one, uses more than one authentication
    /// method, or is otherwise malformed (400).
    InvalidRequest(&'static str),
    /// Client authentication failed: unknown client, wrong secret, or none given (401, with
    /// `WWW-Authenticate: Basic`; see [`OAuthError::www_authenticate`]).
    InvalidClient,
    /// A grant type other than `client_credentials` (400).
    UnsupportedGrantType,
    /// A `scope` was requested: this server issues tokens without scopes (400, RFC 6749 §5.2).
    InvalidScope,
}

impl OAuthError {
    /// The `error` code (RFC 6749 §5.2).
    pub fn code(&self) -> &'static str {
        match self {
            OAuthError::InvalidRequest(_) => "invalid_request",
            OAuthError::InvalidClient => "invalid_client",
            OAuthError::UnsupportedGrantType => "unsupported_grant_type",
            OAuthError::InvalidScope => "invalid_scope",
        }
    }

    /// The HTTP status code: 401 for `invalid_client`, else 400 (RFC 6749 §5.2).
    pub fn status(&self) -> u16 {
        match self {
            OAuthError::InvalidClient => 401,
            _ => 400,
        }
    }

    /// The `error_description`: ASCII, no quote or backslash (RFC 6749 §5.2). The same for an
    /// unknown client id and a wrong secret, so that neither tells which client ids exist.
    pub fn description(&self) -> &'static str {
        match self {
            OAuthError::InvalidRequest(why) => why,
            OAuthError::InvalidClient => "client authentication failed",
            OAuthError::UnsupportedGrantType => "only grant_type=client_credentials is supported",
            OAuthError::InvalidScope => "scopes are not supported: request a token without scope",
        }
    }

    /// The `WWW-Authenticate` header to send, if any: `Basic` with every `invalid_client`.
    /// RFC 6749 §5.2 requires it after a failed Basic authentication and allows the 401 (with
    /// the schemes supported) after `client_secret_post`; RFC 9110 §15.5.2 requires a challenge
    /// on every 401.
    pub fn www_authenticate(&self) -> Option<&'static str> {
        match self {
            OAuthError::InvalidClient => Some(r#"Basic realm="apikey-operator""#),
            _ => None,
        }
    }

    /// The JSON body.
    pub fn body(&self) -> serde_json::Value {
        serde_json::json!({ "error": self.code(), "error_description": self.description() })
    }
}

/// Reads a token request from its `Authorization` header (if any), `Content-Type` header and
/// body. Follows RFC 6749: the body is form-urlencoded (§4.4.2); a parameter without a value is
/// as if omitted, and none may appear twice (§3.1, §3.2); a client uses one authentication method
/// only (§2.3.1); Basic credentials are form-urlencoded before base64 (§2.3.1); `grant_type` is
/// required and must be `client_credentials` (§4.4.2, §5.2).
pub fn parse(
    authorization: Option<&[u8]>,
    content_type: Option<&str>,
    body: &[u8],
) -> Result<TokenRequest, OAuthError> {
    let params = Form::read(content_type, body)?;
    match params.get("grant_type") {
        None => return Err(OAuthError::InvalidRequest("grant_type is missing")),
        Some(CLIENT_CREDENTIALS) => {}
        Some(_) => return Err(OAuthError::UnsupportedGrantType),
    }
    let (client_id, client_secret, method) = params.client(authorization)?;
    Ok(TokenRequest {
        client_id,
        client_secret,
        method,
        scope: params.get("scope").map(str::to_owned),
    })
}

/// An introspection request (RFC 7662 §2.1): the token, and the credentials of the client asking
/// (a Ready ApiKey's, with `client_secret_basic` or `client_secret_post`). Its `Debug` shows
/// neither the token nor the secret.
pub struct IntrospectionRequest {
    /// The token to introspect.
    pub token: String,
    /// The caller's client id.
    pub client_id: String,
    /// The caller's client secret.
    pub client_secret: ClientSecret,
    /// How the caller authenticated.
    pub method: AuthMethod,
}

/// Reads an introspection request: a form body (RFC 7662 §2.1) with `token` (required) and
/// `token_type_hint` (ignored: there is one kind of token), and client authentication as at the
/// token endpoint (RFC 6749 §2.3.1).
pub fn parse_introspection(
    authorization: Option<&[u8]>,
    content_type: Option<&str>,
    body: &[u8],
) -> Result<IntrospectionRequest, OAuthError> {
    let params = Form::read(content_type, body)?;
    let (client_id, client_secret, method) = params.client(authorization)?;
    let token = params
        .get("token")
        .ok_or(OAuthError::InvalidRequest("token is missing"))?
        .to_owned();
    Ok(IntrospectionRequest {
        token,
        client_id,
        client_secret,
        method,
    })
}

impl std::fmt::Debug for IntrospectionRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IntrospectionRequest")
            .field("token", &"<redacted>")
            .field("client_id", &self.client_id)
            .field("method", &self.method)
            .finish_non_exhaustive()
    }
}

/// The parameters of a form-urlencoded request body.
struct Form(Vec<(String, String)>);

impl Form {
    /// Reads the body: `application/x-www-form-urlencoded`, UTF-8 (RFC 6749 Appendix B); a
    /// parameter without a value is as if omitted, and none may appear twice (RFC 6749 §3.1).
    fn read(content_type: Option<&str>, body: &[u8]) -> Result<Self, OAuthError> {
        let media_type = content_type.map(|c| {
            c.split(';')
                .next()
                .unwrap_or_default()
                .trim()
                .to_ascii_lowercase()
        });
        if media_type.as_deref() != Some(FORM_CONTENT_TYPE) {
            return Err(OAuthError::InvalidRequest(
                "the request body must be application/x-www-form-urlencoded",
            ));
        }
        if std::str::from_utf8(body).is_err() {
            return Err(OAuthError::InvalidRequest("the request body is not UTF-8"));
        }
        let mut params: Vec<(String, String)> = Vec::new();
        for (name, value) in form_urlencoded::parse(body) {
            if value.is_empty() {
                continue;
            }
            if params.iter().any(|(n, _)| *n == name) {
                return Err(OAuthError::InvalidRequest("a parameter is repeated"));
            }
            params.push((name.into_owned(), value.into_owned()));
        }
        Ok(Self(params))
    }

    fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The client's credentials: from the `Authorization` header or from the body, never both
    /// (RFC 6749 §2.3.1).
    fn client(
        &self,
        authorization: Option<&[u8]>,
    ) -> Result<(String, ClientSecret, AuthMethod), OAuthError> {
        let posted = (self.get("client_id"), self.get("client_secret"));
        match (authorization, posted) {
            (Some(header), (None, None)) => {
                let (id, secret) = basic(header)?;
                Ok((id, ClientSecret::new(secret), AuthMethod::ClientSecretBasic))
            }
            (Some(_), _) => Err(OAuthError::InvalidRequest(
                "more than one client authentication method",
            )),
            (None, (Some(id), Some(secret))) => Ok((
                id.to_owned(),
                ClientSecret::new(secret.to_owned()),
                AuthMethod::ClientSecretPost,
            )),
            (None, _) => Err(OAuthError::InvalidClient),
        }
    }
}

/// The client id and secret of an `Authorization: Basic` header (RFC 7617), each form-urlencoded
/// inside it (RFC 6749 §2.3.1). Anything else is a failed Basic authentication.
fn basic(header: &[u8]) -> Result<(String, String), OAuthError> {
    let failed = OAuthError::InvalidClient;
    let header = std::str::from_utf8(header).map_err(|_| failed.clone())?;
    let (scheme, encoded) = header.trim().split_once(' ').ok_or(failed.clone())?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return Err(failed);
    }
    let decoded = STANDARD
        .decode(encoded.trim())
        .map_err(|_| failed.clone())?;
    let decoded = String::from_utf8(decoded).map_err(|_| failed.clone())?;
    let (id, secret) = decoded.split_once(':').ok_or(failed.clone())?;
    let unescape = |s: &str| -> String {
        form_urlencoded::parse(format!("v={s}").as_bytes())
            .next()
            .map(|(_, v)| v.into_owned())
            .unwrap_or_default()
    };
    let (id, secret) = (unescape(id), unescape(secret));
    if id.is_empty() || secret.is_empty() {
        return Err(failed);
    }
    Ok((id, secret))
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "akid_AAAAAAAAAAAAAAAAAAAAAA";
    const SECRET: &str = "aksk_secret+with/odd:chars";

    fn basic_header(id: &str, secret: &str) -> String {
        let enc = |s: &str| form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
        format!(
            "Basic {}",
            STANDARD.encode(format!("{}:{}", enc(id), enc(secret)))
        )
    }

    fn form(pairs: &[(&str, &str)]) -> Vec<u8> {
        form_urlencoded::Serializer::new(String::new())
            .extend_pairs(pairs)
            .finish()
            .into_bytes()
    }

    fn post(auth: Option<&str>, body: &[u8]) -> Result<TokenRequest, OAuthError> {
        parse(auth.map(str::as_bytes), Some(FORM_CONTENT_TYPE), body)
    }

    #[test]
    fn basic_credentials_are_form_urlencoded_inside_base64() {
        let header = basic_header(ID, SECRET);
        let r = post(
            Some(&header),
            &form(&[("grant_type", "client_credentials")]),
        )
        .unwrap();
        assert_eq!(r.client_id, ID);
        assert_eq!(r.client_secret.expose(), SECRET);
        assert_eq!(r.method, AuthMethod::ClientSecretBasic);
        // a client that did not form-encode gets its '+' read as a space, as RFC 6749 says
        let raw = format!("Basic {}", STANDARD.encode(format!("{ID}:a+b")));
        let r = post(Some(&raw), &form(&[("grant_type", "client_credentials")])).unwrap();
        assert_eq!(r.client_secret.expose(), "a b");
    }

    #[test]
    fn post_credentials_and_scope_are_read_from_the_body() {
        let body = form(&[
            ("grant_type", "client_credentials"),
            ("client_id", ID),
            ("client_secret", SECRET),
            ("scope", "read write"),
        ]);
        let r = post(None, &body).unwrap();
        assert_eq!(
            (r.client_id.as_str(), r.client_secret.expose(), r.method),
            (ID, SECRET, AuthMethod::ClientSecretPost)
        );
        assert_eq!(r.scope.as_deref(), Some("read write"));
    }

    #[test]
    fn malformed_requests_get_the_rfc_errors() {
        let grant = form(&[("grant_type", "client_credentials")]);
        let header = basic_header(ID, SECRET);
        let cases: Vec<(Result<TokenRequest, OAuthError>, &str, u16)> = vec![
            (post(Some(&header), b""), "invalid_request", 400),
            (
                post(Some(&header), &form(&[("grant_type", "password")])),
                "unsupported_grant_type",
                400,
            ),
            (
                post(
                    Some(&header),
                    b"grant_type=client_credentials&grant_type=client_credentials",
                ),
                "invalid_request",
                400,
            ),
            (
                post(
                    Some(&header),
                    &form(&[
                        ("grant_type", "client_credentials"),
                        ("client_secret", SECRET),
                    ]),
                ),
                "invalid_request",
                400,
            ),
            (post(None, &grant), "invalid_client", 401),
            (
                post(
                    None,
                    &form(&[("grant_type", "client_credentials"), ("client_id", ID)]),
                ),
                "invalid_client",
                401,
            ),
            (post(Some("Bearer abc"), &grant), "invalid_client", 401),
            (post(Some("Basic !!!"), &grant), "invalid_client", 401),
            (
                post(
                    Some(&format!("Basic {}", STANDARD.encode("no-colon"))),
                    &grant,
                ),
                "invalid_client",
                401,
            ),
            (
                parse(None, Some("application/json"), &grant),
                "invalid_request",
                400,
            ),
            (parse(None, None, &grant), "invalid_request", 400),
            (
                post(None, b"grant_type=client_credentials&x=\xff"),
                "invalid_request",
                400,
            ),
        ];
        for (i, (result, code, status)) in cases.into_iter().enumerate() {
            let err = result.expect_err(&format!("case {i} must fail"));
            assert_eq!((err.code(), err.status()), (code, status), "case {i}");
            let body = err.body();
            assert_eq!(body["error"], code);
            assert!(body["error_description"].as_str().unwrap().is_ascii());
        }
        // an empty value is as if the parameter were omitted (RFC 6749 §3.1)
        let r = post(Some(&header), b"grant_type=client_credentials&scope=");
        assert!(r.unwrap().scope.is_none());
        // media type parameters and case are allowed
        let r = parse(
            Some(header.as_bytes()),
            Some("Application/X-WWW-Form-Urlencoded; charset=UTF-8"),
            &grant,
        );
        assert!(r.is_ok());
    }

    #[test]
    fn a_failed_basic_authentication_asks_for_basic_and_says_nothing_about_the_client() {
        let err = OAuthError::InvalidClient;
        assert_eq!(
            err.www_authenticate(),
            Some(r#"Basic realm="apikey-operator""#)
        );
        assert_eq!(OAuthError::UnsupportedGrantType.www_authenticate(), None);
        assert_eq!(err.description(), "client authentication failed");
        let debug = format!(
            "{:?}",
            post(
                Some(&basic_header(ID, SECRET)),
                &form(&[("grant_type", "client_credentials")])
            )
        );
        assert!(!debug.contains(SECRET), "the secret never shows in Debug");
    }
}
