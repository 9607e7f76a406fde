//! The token server's Kubernetes-free parts: the OAuth 2.0 client credentials grant (RFC 6749
//! §4.4) as the token endpoint must read and answer it. The server itself (issue 13) builds on
//! these.

pub mod claims;
pub mod client_auth;
