//! Errors of the export. A bad request is the caller's to fix; the others are worth a retry.

use thiserror::Error;

/// What an AWS adapter returns: the SDK error, boxed, so the cause is kept behind the port.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

#[derive(Debug, Error)]
pub enum ExportError {
    /// The payload or the command line asks for something the export cannot do; nothing was written.
    #[error("bad export request: {0}")]
    BadRequest(String),
    #[error("reading log group {log_group}: {source}")]
    ReadLogs {
        log_group: String,
        #[source]
        source: BoxError,
    },
    #[error("writing s3://{bucket}/{key}: {source}")]
    WriteObject {
        bucket: String,
        key: String,
        #[source]
        source: BoxError,
    },
    #[error("listing or deleting objects under s3://{bucket}/{prefix}: {source}")]
    CleanUp {
        bucket: String,
        prefix: String,
        #[source]
        source: BoxError,
    },
    #[error("encoding Parquet: {0}")]
    Parquet(#[from] parquet::errors::ParquetError),
    /// The day's complete export (its `_SUCCESS` manifest) has more rows than this run found: part of its
    /// log is gone. The earlier export is kept; `allow_shrink` replaces it anyway.
    #[error(
        "refusing to shrink {day}: its export has {exported_rows} rows, the log now gives {found_rows}; \
         the earlier export is kept (re-run with allow_shrink to replace it)"
    )]
    WouldShrink { day: String, exported_rows: u64, found_rows: u64 },
    /// More malformed usage lines than allowed: the rows were written, the day is not marked complete.
    #[error(
        "{day}: {malformed} malformed usage lines (more than {allowed}); the {rows} good rows were written but \
         the day is not marked complete. First ones: {samples:?}"
    )]
    TooManyMalformed { day: String, malformed: u64, allowed: u64, rows: u64, samples: Vec<String> },
    /// The 03:00 UTC check found no complete export of the day.
    #[error("no complete export of {day}: {reason}")]
    IncompleteExport { day: String, reason: String },
}

impl ExportError {
    /// The `errorType` Lambda reports, so a caller can tell its own mistake from a failure.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::BadRequest(_) => "BadRequest",
            Self::ReadLogs { .. } => "ReadLogsFailed",
            Self::WriteObject { .. } | Self::CleanUp { .. } => "WriteFailed",
            Self::Parquet(_) => "EncodeFailed",
            Self::WouldShrink { .. } => "WouldShrink",
            Self::TooManyMalformed { .. } => "TooManyMalformed",
            Self::IncompleteExport { .. } => "IncompleteExport",
        }
    }
}

impl From<ExportError> for lambda_runtime::Diagnostic {
    fn from(error: ExportError) -> Self {
        lambda_runtime::Diagnostic { error_type: error.kind().to_owned(), error_message: error.to_string() }
    }
}
