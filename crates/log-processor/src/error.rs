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
}

impl ExportError {
    /// The `errorType` Lambda reports, so a caller can tell its own mistake from a failure.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::BadRequest(_) => "BadRequest",
            Self::ReadLogs { .. } => "ReadLogsFailed",
            Self::WriteObject { .. } | Self::CleanUp { .. } => "WriteFailed",
            Self::Parquet(_) => "EncodeFailed",
        }
    }
}

impl From<ExportError> for lambda_runtime::Diagnostic {
    fn from(error: ExportError) -> Self {
        lambda_runtime::Diagnostic { error_type: error.kind().to_owned(), error_message: error.to_string() }
    }
}
