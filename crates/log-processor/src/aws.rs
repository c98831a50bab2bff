//! The ports on the AWS SDK: CloudWatch Logs `FilterLogEvents` and S3. The same code runs against moto
//! (AWS_ENDPOINT_URL): only the endpoint differs, never the code path.
//!
//! IAM the export needs: `logs:FilterLogEvents` on the usage log groups; `s3:PutObject`,
//! `s3:AbortMultipartUpload` (with `s3:ListMultipartUploadParts` optional), `s3:ListBucket` (prefix
//! `logs/*`), `s3:GetObject` (the days' `_SUCCESS` manifests) and `s3:DeleteObject` on the bucket's `logs/`
//! prefix.

use std::sync::Arc;

use async_trait::async_trait;
use aws_config::retry::RetryConfig;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart, Delete, ObjectIdentifier};
use thiserror::Error;

use crate::config::ExportConfig;
use crate::error::BoxError;
use crate::export::{ExportSettings, Exporter};
use crate::ports::{LogPage, LogQuery, LogSource, ObjectStore};

/// An AWS call that failed, with the SDK's whole error chain in the message and the error kept as source.
#[derive(Debug, Error)]
#[error("{operation}: {detail}")]
pub struct AwsCallError {
    operation: &'static str,
    detail: String,
    #[source]
    source: BoxError,
}

pub(crate) fn aws_error<E>(operation: &'static str, error: E) -> BoxError
where
    E: std::error::Error + Send + Sync + 'static,
{
    let detail = aws_sdk_s3::error::DisplayErrorContext(&error).to_string();
    Box::new(AwsCallError { operation, detail, source: Box::new(error) })
}

/// FilterLogEvents is limited to a few calls per second per account and Region: a long export, read in
/// several slices at once, meets throttling. Adaptive retries slow the client down to the rate it is
/// granted (and back off); more attempts than the default three.
const LOGS_MAX_ATTEMPTS: u32 = 10;

pub struct CloudWatchLogSource {
    client: aws_sdk_cloudwatchlogs::Client,
}

impl CloudWatchLogSource {
    pub fn new(sdk_config: &aws_config::SdkConfig) -> Self {
        let config = aws_sdk_cloudwatchlogs::config::Builder::from(sdk_config)
            .retry_config(RetryConfig::adaptive().with_max_attempts(LOGS_MAX_ATTEMPTS))
            .build();
        Self { client: aws_sdk_cloudwatchlogs::Client::from_conf(config) }
    }
}

#[async_trait]
impl LogSource for CloudWatchLogSource {
    async fn page(&self, query: &LogQuery, next_token: Option<String>) -> Result<LogPage, BoxError> {
        let output = self
            .client
            .filter_log_events()
            .log_group_name(&query.log_group)
            .start_time(query.start_ms)
            .end_time(query.end_ms)
            .filter_pattern(&query.filter_pattern)
            .set_next_token(next_token)
            .send()
            .await
            .map_err(|error| aws_error("FilterLogEvents", error))?;
        Ok(LogPage {
            messages: output.events.unwrap_or_default().into_iter().filter_map(|event| event.message).collect(),
            next_token: output.next_token.filter(|token| !token.is_empty()),
        })
    }
}

pub struct S3ObjectStore {
    client: aws_sdk_s3::Client,
    bucket: String,
}

impl S3ObjectStore {
    pub fn new(sdk_config: &aws_config::SdkConfig, bucket: String) -> Self {
        // A custom endpoint (moto, a local S3) has no per-bucket host names.
        let path_style = sdk_config.endpoint_url().is_some();
        let config = aws_sdk_s3::config::Builder::from(sdk_config).force_path_style(path_style).build();
        Self { client: aws_sdk_s3::Client::from_conf(config), bucket }
    }
}

const PARQUET_CONTENT_TYPE: &str = "application/vnd.apache.parquet";

#[async_trait]
impl ObjectStore for S3ObjectStore {
    fn bucket(&self) -> &str {
        &self.bucket
    }

    async fn put_object(&self, key: &str, body: Vec<u8>) -> Result<(), BoxError> {
        self.client
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            .content_type(if key.ends_with(".parquet") { PARQUET_CONTENT_TYPE } else { "application/json" })
            .body(ByteStream::from(body))
            .send()
            .await
            .map_err(|error| aws_error("PutObject", error))?;
        Ok(())
    }

    async fn get_object(&self, key: &str) -> Result<Option<Vec<u8>>, BoxError> {
        let output = match self.client.get_object().bucket(&self.bucket).key(key).send().await {
            Ok(output) => output,
            Err(error)
                if error.as_service_error().is_some_and(aws_sdk_s3::operation::get_object::GetObjectError::is_no_such_key) =>
            {
                return Ok(None)
            }
            Err(error) => return Err(aws_error("GetObject", error)),
        };
        Ok(Some(output.body.collect().await?.into_bytes().to_vec()))
    }

    async fn create_multipart_upload(&self, key: &str) -> Result<String, BoxError> {
        let output = self
            .client
            .create_multipart_upload()
            .bucket(&self.bucket)
            .key(key)
            .content_type(PARQUET_CONTENT_TYPE)
            .send()
            .await
            .map_err(|error| aws_error("CreateMultipartUpload", error))?;
        output.upload_id.ok_or_else(|| "CreateMultipartUpload returned no upload id".into())
    }

    async fn upload_part(&self, key: &str, upload_id: &str, part_number: i32, body: Vec<u8>) -> Result<String, BoxError> {
        let output = self
            .client
            .upload_part()
            .bucket(&self.bucket)
            .key(key)
            .upload_id(upload_id)
            .part_number(part_number)
            .body(ByteStream::from(body))
            .send()
            .await
            .map_err(|error| aws_error("UploadPart", error))?;
        output.e_tag.ok_or_else(|| format!("UploadPart {part_number} returned no ETag").into())
    }

    async fn complete_multipart_upload(&self, key: &str, upload_id: &str, parts: Vec<(i32, String)>) -> Result<(), BoxError> {
        let parts =
            parts.into_iter().map(|(number, etag)| CompletedPart::builder().part_number(number).e_tag(etag).build()).collect();
        self.client
            .complete_multipart_upload()
            .bucket(&self.bucket)
            .key(key)
            .upload_id(upload_id)
            .multipart_upload(CompletedMultipartUpload::builder().set_parts(Some(parts)).build())
            .send()
            .await
            .map_err(|error| aws_error("CompleteMultipartUpload", error))?;
        Ok(())
    }

    async fn abort_multipart_upload(&self, key: &str, upload_id: &str) -> Result<(), BoxError> {
        self.client
            .abort_multipart_upload()
            .bucket(&self.bucket)
            .key(key)
            .upload_id(upload_id)
            .send()
            .await
            .map_err(|error| aws_error("AbortMultipartUpload", error))?;
        Ok(())
    }

    async fn list_keys(&self, prefix: &str) -> Result<Vec<String>, BoxError> {
        let mut keys = Vec::new();
        let mut pages = self.client.list_objects_v2().bucket(&self.bucket).prefix(prefix).into_paginator().send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|error| aws_error("ListObjectsV2", error))?;
            keys.extend(page.contents.unwrap_or_default().into_iter().filter_map(|object| object.key));
        }
        Ok(keys)
    }

    async fn delete_keys(&self, keys: &[String]) -> Result<(), BoxError> {
        for chunk in keys.chunks(1000) {
            let objects = chunk.iter().map(|key| ObjectIdentifier::builder().key(key).build()).collect::<Result<Vec<_>, _>>()?;
            let output = self
                .client
                .delete_objects()
                .bucket(&self.bucket)
                .delete(Delete::builder().set_objects(Some(objects)).quiet(true).build()?)
                .send()
                .await
                .map_err(|error| aws_error("DeleteObjects", error))?;
            if let Some(error) = output.errors.unwrap_or_default().first() {
                return Err(format!(
                    "DeleteObjects refused {}: {} {}",
                    error.key.as_deref().unwrap_or("?"),
                    error.code.as_deref().unwrap_or(""),
                    error.message.as_deref().unwrap_or("")
                )
                .into());
            }
        }
        Ok(())
    }
}

/// The SDK configuration from the standard chain (region, credentials, AWS_ENDPOINT_URL), with the process's
/// one SDK HTTP client, as every function loads it.
pub use metering_core::chat::load_sdk_config;

/// The exporter on CloudWatch Logs and S3, with the settings of `config`.
pub fn exporter_on_aws(config: &ExportConfig, sdk_config: &aws_config::SdkConfig) -> Exporter {
    exporter_with(config, sdk_config, ExportSettings::from_config(config))
}

pub fn exporter_with(config: &ExportConfig, sdk_config: &aws_config::SdkConfig, settings: ExportSettings) -> Exporter {
    Exporter::new(
        Arc::new(CloudWatchLogSource::new(sdk_config)),
        Arc::new(S3ObjectStore::new(sdk_config, config.bucket.clone())),
        settings,
    )
}
