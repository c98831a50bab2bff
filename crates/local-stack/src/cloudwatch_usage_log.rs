//! Locally, usage lines go to standard output *and* to a CloudWatch Logs group in moto, as Lambda's log
//! capture would put them there, so the log export can be run against the local stack.

use async_trait::async_trait;
use aws_sdk_cloudwatchlogs::error::DisplayErrorContext;
use aws_sdk_cloudwatchlogs::types::InputLogEvent;
use metering_core::usage::{StdoutUsageLog, UsageLog, UsageRecord};

pub struct CloudWatchUsageLog {
    client: aws_sdk_cloudwatchlogs::Client,
    log_group: String,
    log_stream: String,
}

impl CloudWatchUsageLog {
    /// Creates the log group (if missing) and a stream of this process's own.
    pub async fn create(
        client: aws_sdk_cloudwatchlogs::Client,
        log_group: String,
    ) -> Result<Self, aws_sdk_cloudwatchlogs::Error> {
        let log_stream = format!(
            "{}/[$LATEST]{}",
            chrono::Utc::now().format("%Y/%m/%d"),
            uuid::Uuid::new_v4().simple()
        );
        if let Err(error) = client.create_log_group().log_group_name(&log_group).send().await {
            let error = aws_sdk_cloudwatchlogs::Error::from(error);
            if !matches!(error, aws_sdk_cloudwatchlogs::Error::ResourceAlreadyExistsException(_)) {
                return Err(error);
            }
        }
        client.create_log_stream().log_group_name(&log_group).log_stream_name(&log_stream).send().await?;
        Ok(Self { client, log_group, log_stream })
    }
}

#[async_trait]
impl UsageLog for CloudWatchUsageLog {
    async fn write(&self, record: &UsageRecord) {
        let event = InputLogEvent::builder()
            .timestamp(chrono::Utc::now().timestamp_millis())
            .message(record.to_line())
            .build();
        let Ok(event) = event else { return };
        let result = self
            .client
            .put_log_events()
            .log_group_name(&self.log_group)
            .log_stream_name(&self.log_stream)
            .log_events(event)
            .send()
            .await;
        if let Err(error) = result {
            tracing::warn!(error = %DisplayErrorContext(&error), request_id = %record.request_id,
                "could not copy the usage line to CloudWatch Logs (it is on stdout)");
        }
    }
}

/// Standard output first (the source of truth), then CloudWatch Logs.
pub struct TeeUsageLog {
    pub cloudwatch: Option<CloudWatchUsageLog>,
}

#[async_trait]
impl UsageLog for TeeUsageLog {
    async fn write(&self, record: &UsageRecord) {
        StdoutUsageLog.write(record).await;
        if let Some(cloudwatch) = &self.cloudwatch {
            cloudwatch.write(record).await;
        }
    }
}
