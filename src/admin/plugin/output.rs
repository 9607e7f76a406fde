//! What `kubectl apikey` prints: kubectl-style tables and `List` documents. Pure.

use k8s_openapi::jiff::Timestamp;
use serde_json::{Value, json};

use crate::admin::keys::{KeyRow, RegenerateState, age};
use crate::core::crd::ApiKey;

/// Columns left-aligned and separated by three spaces, as `kubectl get` prints them; an empty
/// cell prints `<none>`.
pub fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let cell = |s: &str| {
        if s.is_empty() {
            "<none>".to_owned()
        } else {
            s.to_owned()
        }
    };
    let rows: Vec<Vec<String>> = rows
        .iter()
        .map(|r| r.iter().map(|c| cell(c)).collect())
        .collect();
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in &rows {
        for (w, c) in widths.iter_mut().zip(row) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let last = cells.len().saturating_sub(1);
        let mut out = String::new();
        for (i, (c, w)) in cells.iter().zip(&widths).enumerate() {
            out.push_str(c);
            if i < last {
                out.push_str(&" ".repeat(w - c.chars().count() + 3));
            }
        }
        out.push('\n');
        out
    };
    let mut out = line(headers.to_vec());
    for row in &rows {
        out.push_str(&line(row.iter().map(String::as_str).collect()));
    }
    out
}

/// The table of `list`: NAMESPACE (with `-A`), NAME, USER, CLIENT ID, READY, REASON, LAST
/// ROTATED, NEXT ROTATION, AGE; times as ages (`5m`, `in 3h`).
pub fn key_table(keys: &[ApiKey], with_namespace: bool, now: Timestamp) -> String {
    let mut headers = vec![
        "NAME",
        "USER",
        "CLIENT ID",
        "READY",
        "REASON",
        "LAST ROTATED",
        "NEXT ROTATION",
        "AGE",
    ];
    if with_namespace {
        headers.insert(0, "NAMESPACE");
    }
    let when = |t: &Option<String>| t.as_deref().and_then(|t| age(t, now)).unwrap_or_default();
    let rows: Vec<Vec<String>> = keys
        .iter()
        .map(KeyRow::of)
        .map(|r| {
            let mut cells = vec![
                r.name.clone(),
                r.user.clone(),
                r.client_id.clone().unwrap_or_default(),
                r.ready.clone(),
                r.reason.clone().unwrap_or_default(),
                when(&r.last_rotated_at),
                when(&r.next_rotation_at),
                when(&r.created_at),
            ];
            if with_namespace {
                cells.insert(0, r.namespace);
            }
            cells
        })
        .collect();
    table(&headers, &rows)
}

/// The keys a bulk command will touch, shown before it asks: NAMESPACE, NAME, USER, READY, and
/// for a key that is not Ready, why (such a key is not rotated until that is fixed), or that no
/// operator has written its status yet.
pub fn preview(keys: &[ApiKey]) -> String {
    let rows: Vec<Vec<String>> = keys
        .iter()
        .map(KeyRow::of)
        .map(|r| {
            let note = match (r.ready.as_str(), &r.reason) {
                ("False", Some(reason)) => {
                    format!("{reason}: {}", r.message.clone().unwrap_or_default())
                }
                ("Unknown", _) => "no status yet: is an operator watching this namespace?".into(),
                _ => String::new(),
            };
            vec![r.namespace, r.name, r.user, r.ready, note]
        })
        .collect();
    table(&["NAMESPACE", "NAME", "USER", "READY", "NOTE"], &rows)
}

/// The outcome of one key in a bulk command.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// `regenerate`: the key answered (rotated), or cannot (failed, with the Ready reason).
    Regenerate {
        /// The generation before the request.
        before: Option<i64>,
        /// The state at the end: [`RegenerateState::Rotated`] or [`RegenerateState::Failed`].
        state: RegenerateState,
    },
    /// `delete`: the ApiKey is gone, and the Secret it controlled (if it had one).
    Deleted,
    /// Not done within `--timeout`: what stands.
    TimedOut(String),
    /// Asked, but what would tell whether it was done cannot be read (RBAC, or the key is gone).
    Unverified(String),
    /// The API server refused the request for this key: its message.
    Refused(String),
}

impl Outcome {
    /// Whether the command did what it was asked for this key.
    pub fn succeeded(&self) -> bool {
        matches!(self, Self::Deleted)
            || matches!(self, Self::Regenerate { state, .. } if state.is_rotated())
    }
}

/// The summary after a bulk command: NAMESPACE, NAME, RESULT, DETAIL (the generation change, or
/// why a key was not done).
pub fn summary(outcomes: &[(String, String, Outcome)]) -> String {
    let generation = |g: &Option<i64>| g.map_or("?".to_owned(), |g| g.to_string());
    let rows: Vec<Vec<String>> = outcomes
        .iter()
        .map(|(namespace, name, outcome)| {
            let (result, detail) = match outcome {
                Outcome::Regenerate {
                    before,
                    state:
                        RegenerateState::Rotated {
                            generation: after,
                            rotated_at,
                        },
                } => (
                    "rotated",
                    format!(
                        "generation {} -> {}{}",
                        generation(before),
                        generation(after),
                        rotated_at
                            .as_ref()
                            .map(|t| format!(" at {t}"))
                            .unwrap_or_default()
                    ),
                ),
                Outcome::Regenerate {
                    state: RegenerateState::Pending,
                    ..
                } => ("timed out", "the operator has not answered yet".to_owned()),
                Outcome::Regenerate {
                    state: RegenerateState::Failed { reason, message },
                    ..
                } => ("failed", format!("{reason}: {message}")),
                Outcome::Deleted => ("deleted", "gone, and its Secret if it had one".to_owned()),
                Outcome::TimedOut(detail) => ("timed out", detail.clone()),
                Outcome::Unverified(detail) => ("unverified", detail.clone()),
                Outcome::Refused(message) => ("refused", message.clone()),
            };
            vec![namespace.clone(), name.clone(), result.to_owned(), detail]
        })
        .collect();
    table(&["NAMESPACE", "NAME", "RESULT", "DETAIL"], &rows)
}

/// `keys` as kubectl's `-o json|yaml` prints a list: a `v1` `List` of the objects, without
/// `metadata.managedFields` (as kubectl leaves them out by default).
pub fn list_document(keys: &[ApiKey]) -> Result<Value, serde_json::Error> {
    let mut items = Vec::with_capacity(keys.len());
    for key in keys {
        let mut key = key.clone();
        key.metadata.managed_fields = None;
        items.push(serde_json::to_value(&key)?);
    }
    Ok(
        json!({"apiVersion": "v1", "kind": "List", "items": items, "metadata": {"resourceVersion": ""}}),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_align_like_kubectl_and_print_none_for_empty_cells() {
        let out = table(
            &["NAME", "USER"],
            &[
                vec!["a".into(), "alice".into()],
                vec!["long-name".into(), String::new()],
            ],
        );
        assert_eq!(
            out,
            "NAME        USER\na           alice\nlong-name   <none>\n"
        );
    }

    #[test]
    fn only_rotated_keys_and_deleted_keys_succeed() {
        let rotated = Outcome::Regenerate {
            before: Some(1),
            state: RegenerateState::Rotated {
                generation: Some(2),
                rotated_at: None,
            },
        };
        assert!(rotated.succeeded());
        assert!(Outcome::Deleted.succeeded());
        assert!(!Outcome::TimedOut("the request stands".into()).succeeded());
        assert!(!Outcome::Unverified("forbidden".into()).succeeded());
        assert!(!Outcome::Refused("forbidden".into()).succeeded());
        assert!(
            !Outcome::Regenerate {
                before: Some(1),
                state: RegenerateState::Pending
            }
            .succeeded()
        );
        let out = summary(&[("ns".into(), "k".into(), rotated)]);
        assert!(
            out.contains("rotated") && out.contains("generation 1 -> 2"),
            "{out}"
        );
    }
}
