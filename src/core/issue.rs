//! Why new credentials are written: the reason a decision gives ([`crate::core::decision`]), which
//! rotation policy ([`crate::core::rotation`]) reads for grace periods, and which events, metrics
//! and the Secret's record ([`crate::core::secret::REASON_ANNOTATION`]) name.

/// Why new credentials are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IssueReason {
    /// The key's first client id and secret.
    Created,
    /// A new value of the regenerate annotation.
    Regenerated,
    /// The secret was older than `spec.rotation.interval`.
    Scheduled,
    /// The Secret was deleted by someone else.
    SecretDeleted,
    /// The Secret's credentials or the operator's record in it were changed by someone else.
    SecretAltered,
}

impl IssueReason {
    /// Event reason shown by `kubectl describe`.
    pub fn event_reason(self) -> &'static str {
        match self {
            IssueReason::Created => "Created",
            IssueReason::Regenerated => "Regenerated",
            IssueReason::Scheduled => "Rotated",
            IssueReason::SecretDeleted | IssueReason::SecretAltered => "Repaired",
        }
    }

    /// Event action: what the operator did.
    pub fn event_action(self) -> &'static str {
        match self {
            IssueReason::Created => "GenerateKey",
            IssueReason::Regenerated => "RegenerateSecret",
            IssueReason::Scheduled => "RotateSecret",
            IssueReason::SecretDeleted => "RecreateSecret",
            IssueReason::SecretAltered => "RewriteSecret",
        }
    }

    /// Label for the metrics of issued keys, also written into the Secret's record
    /// ([`crate::core::secret::REASON_ANNOTATION`]).
    pub fn metric_label(self) -> &'static str {
        match self {
            IssueReason::Created => "created",
            IssueReason::Regenerated => "regenerated",
            IssueReason::Scheduled => "scheduled",
            IssueReason::SecretDeleted => "repaired_deleted",
            IssueReason::SecretAltered => "repaired_altered",
        }
    }

    /// The reason of a record's [`IssueReason::metric_label`]; `None` for anything else (such as
    /// `adopted`: a record re-sealed without a new secret).
    pub fn from_label(label: &str) -> Option<Self> {
        [
            IssueReason::Created,
            IssueReason::Regenerated,
            IssueReason::Scheduled,
            IssueReason::SecretDeleted,
            IssueReason::SecretAltered,
        ]
        .into_iter()
        .find(|r| r.metric_label() == label)
    }

    /// What made the key rotate, for the metric of rotations: `annotation`, `schedule` or
    /// `repair`; `None` for a key's first secret, which is no rotation.
    pub fn trigger(self) -> Option<&'static str> {
        match self {
            IssueReason::Created => None,
            IssueReason::Regenerated => Some("annotation"),
            IssueReason::Scheduled => Some("schedule"),
            IssueReason::SecretDeleted | IssueReason::SecretAltered => Some("repair"),
        }
    }

    /// Human-readable explanation, free of secret material.
    pub fn describe(self, secret_name: &str) -> String {
        match self {
            IssueReason::Created => {
                format!("generated a client id and secret into Secret {secret_name}")
            }
            IssueReason::Regenerated => format!(
                "generated a new client secret into Secret {secret_name} for a new value of the regenerate annotation"
            ),
            IssueReason::Scheduled => format!(
                "generated a new client secret into Secret {secret_name}: the previous one was older than spec.rotation.interval"
            ),
            IssueReason::SecretDeleted => {
                format!("Secret {secret_name} was deleted; wrote it again with a new client secret")
            }
            IssueReason::SecretAltered => format!(
                "Secret {secret_name} was altered by someone else (its credentials or the operator's sealed record in it); wrote a new client secret"
            ),
        }
    }
}
