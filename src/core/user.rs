//! Who a user is: what `spec.user` accepts, and how two users are compared.
//!
//! `spec.user` becomes an access token's subject (`sub`) and may end up in HTTP headers and
//! logs, so the API server refuses control characters, invisible (format) characters, line and
//! paragraph separators, and leading or trailing whitespace ([`USER_RULE`]). Inside a name, plain
//! spaces are fine (`Alice Smith`).
//!
//! Matching rule, applied everywhere users are compared (one key per user, the index of keys per
//! user): two users are the same when their Unicode NFC normalisations (Unicode Standard Annex
//! #15) are equal, so `josé` typed composed or decomposed is one user. Case matters: `Alice` and
//! `alice` are two users, as Kubernetes usernames and JWT `sub` values are (RFC 7519 §4.1.2:
//! StringOrURI values are compared case-sensitively).

use std::borrow::Cow;

use unicode_normalization::{IsNormalized, UnicodeNormalization as _, is_nfc_quick};

/// CEL rule on `spec.user` (RE2 syntax): no character of the Unicode categories C (control,
/// format, surrogate, private use, unassigned) or Z (separators) except the plain space, which may
/// not begin or end the name.
pub const USER_RULE: &str =
    r"self.matches('^[^\\p{C}\\p{Z}]([^\\p{C}\\p{Z}]|[ ])*$') && !self.endsWith(' ')";

/// CEL rule on `spec.user`: not in Kubernetes' reserved `system:` namespace of users. A token's
/// `sub` is the user, and a verifier mapping it to a Kubernetes username without a prefix would
/// otherwise let whoever may create ApiKeys mint `system:masters`-like identities.
pub const RESERVED_USER_RULE: &str = "!self.startsWith('system:')";

/// Message of [`RESERVED_USER_RULE`].
pub const RESERVED_USER_RULE_MESSAGE: &str =
    "spec.user must not begin with 'system:', which Kubernetes reserves for its own users";

/// Message of [`USER_RULE`].
pub const USER_RULE_MESSAGE: &str = "spec.user must not contain control or invisible characters or line breaks, nor begin or end with whitespace";

/// The form in which users are compared: the NFC normalisation of `user`.
pub fn canonical(user: &str) -> Cow<'_, str> {
    match is_nfc_quick(user.chars()) {
        IsNormalized::Yes => Cow::Borrowed(user),
        _ => Cow::Owned(user.nfc().collect()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn composed_and_decomposed_are_one_user_case_is_not() {
        let composed = "jos\u{e9}";
        let decomposed = "jose\u{301}";
        assert_ne!(composed, decomposed);
        assert_eq!(canonical(composed), canonical(decomposed));
        assert!(matches!(canonical(composed), Cow::Borrowed(_)));
        assert_ne!(canonical("Alice"), canonical("alice"));
    }
}
