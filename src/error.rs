//! The operator's one error type.

/// Everything that can go wrong in the operator. Messages never include secret material.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A call to the Kubernetes API failed.
    #[error("Kubernetes API error: {0}")]
    Kube(#[from] kube::Error),

    /// The operating system's random number generator failed.
    #[error("the operating system's random number generator failed: {0}")]
    Random(String),

    /// argon2id hashing failed (bad parameters or a failed worker).
    #[error("hashing the client secret failed: {0}")]
    Hash(String),

    /// An object from the cluster lacks a field the operator needs.
    #[error("object is missing {0}")]
    MissingField(&'static str),

    /// A configuration value was rejected at start.
    #[error("{0}")]
    Config(String),

    /// Leader election failed.
    #[error("leader election: {0}")]
    Lease(String),

    /// Serialising an object failed.
    #[error("serialisation failed: {0}")]
    Serialize(#[from] serde_json::Error),

    /// The health and metrics endpoint could not be served.
    #[error("HTTP server error: {0}")]
    Http(#[from] std::io::Error),
}

impl Error {
    /// A short, stable label for metrics and logs (`kube`, `random`, ...).
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::Kube(kube::Error::Api(status)) if status.is_conflict() => "conflict",
            Error::Kube(_) => "kube",
            Error::Random(_) => "random",
            Error::Hash(_) => "hash",
            Error::MissingField(_) => "missing_field",
            Error::Config(_) => "config",
            Error::Lease(_) => "lease",
            Error::Serialize(_) => "serialize",
            Error::Http(_) => "http",
        }
    }
}

/// Result with the operator's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
