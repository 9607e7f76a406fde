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

/// The API server's answer inside a failed watch, if the API server answered (a refused list or
/// watch, an error event in the stream); `None` for a transport or decoding failure.
pub fn watch_status(error: &kube::runtime::watcher::Error) -> Option<&kube::core::Status> {
    use kube::runtime::watcher::Error as W;
    match error {
        W::InitialListFailed(kube::Error::Api(s))
        | W::WatchStartFailed(kube::Error::Api(s))
        | W::WatchFailed(kube::Error::Api(s)) => Some(s.as_ref()),
        W::WatchError(s) => Some(s.as_ref()),
        _ => None,
    }
}

/// Result with the operator's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
