//! Kubernetes object names (DNS-1123 labels and subdomains, as the API server reads them), checked
//! before they become part of an API path or a flag's value: kube puts them into the URL as they
//! are, so `../..`, `k/status` or `?labelSelector=x` would reach another path or another verb.
//! Used by the operator's flags and the console's requests. Pure.

/// Longest DNS-1123 label (a namespace), in characters.
pub const LABEL_MAX: usize = 63;

/// Longest DNS-1123 subdomain (an ApiKey's name), in characters.
pub const SUBDOMAIN_MAX: usize = 253;

/// Checks that `namespace` is a DNS-1123 label (RFC 1123 as Kubernetes reads it): 1 to 63
/// characters of `a-z`, `0-9` and `-`, starting and ending with a letter or digit.
/// Errors: why not, naming the value.
pub fn check_namespace(namespace: &str) -> Result<(), String> {
    if namespace.len() <= LABEL_MAX && is_label(namespace) {
        Ok(())
    } else {
        Err(format!(
            "{namespace:?} is not a namespace: at most {LABEL_MAX} characters of a-z, 0-9 and '-', starting and ending with a letter or digit"
        ))
    }
}

/// Checks that `name` is a DNS-1123 subdomain (the names of ApiKeys): 1 to 253 characters, labels
/// of `a-z`, `0-9` and `-` joined by dots, each starting and ending with a letter or digit.
/// Errors: why not, naming the value.
pub fn check_name(name: &str) -> Result<(), String> {
    if name.len() <= SUBDOMAIN_MAX && name.split('.').all(is_label) {
        Ok(())
    } else {
        Err(format!(
            "{name:?} is not an API key's name: at most {SUBDOMAIN_MAX} characters of a-z, 0-9, '-' and '.', starting and ending with a letter or digit"
        ))
    }
}

/// Whether `part` is non-empty, of `a-z0-9-` only, with no `-` at either end.
fn is_label(part: &str) -> bool {
    let alphanumeric = |c: u8| c.is_ascii_lowercase() || c.is_ascii_digit();
    let bytes = part.as_bytes();
    match (bytes.first(), bytes.last()) {
        (Some(&first), Some(&last)) => {
            alphanumeric(first)
                && alphanumeric(last)
                && bytes.iter().all(|&c| alphanumeric(c) || c == b'-')
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn namespaces_are_dns_labels() {
        for ok in ["a", "team-a", "0", "a1-b2", &"a".repeat(63)] {
            assert_eq!(check_namespace(ok), Ok(()), "{ok}");
        }
        for bad in [
            "",
            "-a",
            "a-",
            "A",
            "a.b",
            "a/b",
            "..%2F..%2Fapi",
            "../../api",
            "a b",
            "é",
            &"a".repeat(64),
        ] {
            assert!(check_namespace(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn names_are_dns_subdomains() {
        let long = vec!["a".repeat(63); 4].join(".");
        assert_eq!(long.len(), 255);
        for ok in ["k", "my-key", "a.b.c", "1.2", &long[..253]] {
            assert_eq!(check_name(ok), Ok(()), "{ok}");
        }
        for bad in [
            "",
            "htmlkey/status",
            "?labelSelector=x",
            "k?x",
            "k#x",
            "..",
            ".a",
            "a.",
            "a..b",
            "a.-b",
            "Key",
            "k%2Fstatus",
            long.as_str(),
        ] {
            assert!(check_name(bad).is_err(), "{bad}");
        }
        assert!(check_name("k/status").unwrap_err().contains("\"k/status\""));
    }
}
