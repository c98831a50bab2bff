//! Locally, usage lines go to standard output *and* to a CloudWatch Logs group in moto, as Lambda's log
//! capture would put them there, so the log export can be run against the local stack.

use aws_sdk_cloudwatchlogs::error::DisplayErrorContext;
use aws_sdk_cloudwatchlogs::types::InputLogEvent;
use metering_core::usage::{StdoutUsageLog, UsageLine, UsageLog};

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

/// How long one copy to CloudWatch Logs may take; the line is on stdout already.
const COPY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

impl UsageLog for CloudWatchUsageLog {
    /// Copies the line in the background, so stdout lines never wait for CloudWatch Logs.
    fn write(&self, line: &UsageLine) {
        let event = InputLogEvent::builder()
            .timestamp(chrono::Utc::now().timestamp_millis())
            .message(line.to_line())
            .build();
        let Ok(event) = event else { return };
        let request = self
            .client
            .put_log_events()
            .log_group_name(&self.log_group)
            .log_stream_name(&self.log_stream)
            .log_events(event);
        let request_id = line.request_id().to_owned();
        tokio::spawn(async move {
            let failure = match tokio::time::timeout(COPY_TIMEOUT, request.send()).await {
                Ok(Ok(_)) => return,
                Ok(Err(error)) => DisplayErrorContext(&error).to_string(),
                Err(_) => format!("no answer within {} s", COPY_TIMEOUT.as_secs()),
            };
            tracing::warn!(error = %failure, request_id = %request_id,
                "could not copy the usage line to CloudWatch Logs (it is on stdout)");
        });
    }
}

/// Standard output first (the source of truth), then CloudWatch Logs.
pub struct TeeUsageLog {
    pub cloudwatch: Option<CloudWatchUsageLog>,
}

impl UsageLog for TeeUsageLog {
    fn write(&self, line: &UsageLine) {
        StdoutUsageLog.write(line);
        if let Some(cloudwatch) = &self.cloudwatch {
            cloudwatch.write(line);
        }
    }
}
