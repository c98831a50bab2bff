//! The two AWS services the export needs, each behind a narrow trait: a log source (CloudWatch Logs
//! `FilterLogEvents`) and an object store (S3). `aws.rs` implements them with the SDK; unit tests use the
//! in-memory fakes below; end-to-end tests run the SDK adapters against moto.

use async_trait::async_trait;

use crate::error::BoxError;

/// The server-side filter; moto ignores JSON patterns, so `line::classify` checks every message again.
pub const USAGE_FILTER_PATTERN: &str = r#"{ $.event = "token_usage" }"#;
/// The lines that say a request's counter update did not apply (read before the day's rows). A quoted term
/// rather than a JSON pattern: moto honours this one too, so a local export does not read the day twice.
/// It may let through a usage line that merely mentions the term; `line::counter_update` checks each one.
pub const COUNTER_UPDATE_FILTER_PATTERN: &str = r#""counter_update""#;

/// One `FilterLogEvents` query: a log group between two instants (epoch milliseconds, both included).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogQuery {
    pub log_group: String,
    pub start_ms: i64,
    pub end_ms: i64,
    pub filter_pattern: String,
}

/// One page of messages. A page may be empty while `next_token` is set: CloudWatch Logs then wants to be
/// asked again, and only a page without a token ends the query.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LogPage {
    pub messages: Vec<String>,
    pub next_token: Option<String>,
}

#[async_trait]
pub trait LogSource: Send + Sync {
    async fn page(&self, query: &LogQuery, next_token: Option<String>) -> Result<LogPage, BoxError>;
}

/// The S3 calls of the export, on one bucket the implementation owns. Keys are relative to that bucket.
#[async_trait]
pub trait ObjectStore: Send + Sync {
    /// The bucket (for messages and summaries).
    fn bucket(&self) -> &str;
    async fn put_object(&self, key: &str, body: Vec<u8>) -> Result<(), BoxError>;
    /// The object's bytes, or `None` when there is no such key.
    async fn get_object(&self, key: &str) -> Result<Option<Vec<u8>>, BoxError>;
    async fn create_multipart_upload(&self, key: &str) -> Result<String, BoxError>;
    /// Returns the part's ETag.
    async fn upload_part(&self, key: &str, upload_id: &str, part_number: i32, body: Vec<u8>) -> Result<String, BoxError>;
    async fn complete_multipart_upload(&self, key: &str, upload_id: &str, parts: Vec<(i32, String)>) -> Result<(), BoxError>;
    async fn abort_multipart_upload(&self, key: &str, upload_id: &str) -> Result<(), BoxError>;
    async fn list_keys(&self, prefix: &str) -> Result<Vec<String>, BoxError>;
    async fn delete_keys(&self, keys: &[String]) -> Result<(), BoxError>;
}

/// Smallest part S3 accepts in a multipart upload, but for the last one.
pub const MIN_PART_BYTES: usize = 5 * 1024 * 1024;

/// One object written in parts: a single `PutObject` when it all fits one part, a multipart upload
/// (started with the first full part) otherwise. Either way the object appears whole, or not at all.
pub struct ObjectUpload<'a> {
    store: &'a dyn ObjectStore,
    key: String,
    upload_id: Option<String>,
    parts: Vec<(i32, String)>,
    bytes: u64,
}

impl<'a> ObjectUpload<'a> {
    pub fn new(store: &'a dyn ObjectStore, key: String) -> Self {
        Self { store, key, upload_id: None, parts: Vec::new(), bytes: 0 }
    }

    pub fn key(&self) -> &str {
        &self.key
    }

    /// Uploads one part (at least [`MIN_PART_BYTES`]; the caller buffers up to that).
    pub async fn write_part(&mut self, body: Vec<u8>) -> Result<(), BoxError> {
        let upload_id = if let Some(upload_id) = &self.upload_id {
            upload_id.clone()
        } else {
            let upload_id = self.store.create_multipart_upload(&self.key).await?;
            self.upload_id = Some(upload_id.clone());
            upload_id
        };
        let part_number = self.parts.len() as i32 + 1;
        let length = body.len() as u64;
        let etag = self.store.upload_part(&self.key, &upload_id, part_number, body).await?;
        self.parts.push((part_number, etag));
        self.bytes += length;
        Ok(())
    }

    /// Uploads `last` and makes the object visible; returns its size.
    pub async fn finish(mut self, last: Vec<u8>) -> Result<u64, BoxError> {
        let Some(upload_id) = self.upload_id.clone() else {
            let length = last.len() as u64;
            self.store.put_object(&self.key, last).await?;
            return Ok(length);
        };
        if !last.is_empty() {
            self.write_part(last).await?;
        }
        self.store.complete_multipart_upload(&self.key, &upload_id, std::mem::take(&mut self.parts)).await?;
        Ok(self.bytes)
    }

    /// Drops the parts uploaded so far (S3 keeps them, and bills them, until told).
    pub async fn abort(self) {
        if let Some(upload_id) = &self.upload_id {
            if let Err(error) = self.store.abort_multipart_upload(&self.key, upload_id).await {
                tracing::warn!(key = %self.key, %error, "could not abort the multipart upload");
            }
        }
    }
}

/// In-memory fakes of the ports, for unit tests.
#[cfg(test)]
pub mod fakes {
    use std::collections::BTreeMap;
    use std::sync::Mutex;

    use super::*;

    /// Serves `messages` in pages of `page_size`, each with the `timestamp` given, honouring the window.
    pub struct PagedLogs {
        pub events: Vec<(i64, String)>,
        pub page_size: usize,
        pub queries: Mutex<Vec<LogQuery>>,
        /// Fail the query of this log group.
        pub failing_group: Option<String>,
    }

    impl PagedLogs {
        pub fn new(events: Vec<(i64, String)>, page_size: usize) -> Self {
            Self { events, page_size, queries: Mutex::default(), failing_group: None }
        }
    }

    #[async_trait]
    impl LogSource for PagedLogs {
        async fn page(&self, query: &LogQuery, next_token: Option<String>) -> Result<LogPage, BoxError> {
            self.queries.lock().unwrap().push(query.clone());
            if self.failing_group.as_deref() == Some(query.log_group.as_str()) {
                return Err("AccessDeniedException: not allowed".into());
            }
            let matching: Vec<&String> = self
                .events
                .iter()
                .filter(|(at, _)| (query.start_ms..=query.end_ms).contains(at))
                .map(|(_, message)| message)
                .collect();
            let start: usize = next_token.map_or(0, |token| token.parse().unwrap());
            let end = (start + self.page_size).min(matching.len());
            Ok(LogPage {
                messages: matching[start..end].iter().map(|m| (*m).clone()).collect(),
                next_token: (end < matching.len()).then(|| end.to_string()),
            })
        }
    }

    /// (part number, body)
    pub type UploadedPart = (i32, Vec<u8>);

    pub struct MemoryStore {
        pub objects: Mutex<BTreeMap<String, Vec<u8>>>,
        pub uploads: Mutex<BTreeMap<String, Vec<UploadedPart>>>,
        pub aborted: Mutex<Vec<String>>,
        pub puts: Mutex<Vec<String>>,
        /// Fail `upload_part` from this part number on.
        pub fail_part_from: Option<i32>,
        /// Smallest part accepted but for the last (S3: 5 MiB).
        pub min_part_bytes: usize,
    }

    impl Default for MemoryStore {
        fn default() -> Self {
            Self {
                objects: Mutex::default(),
                uploads: Mutex::default(),
                aborted: Mutex::default(),
                puts: Mutex::default(),
                fail_part_from: None,
                min_part_bytes: MIN_PART_BYTES,
            }
        }
    }

    impl MemoryStore {
        pub fn keys(&self) -> Vec<String> {
            self.objects.lock().unwrap().keys().cloned().collect()
        }

        pub fn object(&self, key: &str) -> Vec<u8> {
            self.objects.lock().unwrap().get(key).cloned().unwrap_or_default()
        }

        pub fn open_uploads(&self) -> usize {
            self.uploads.lock().unwrap().len()
        }
    }

    #[async_trait]
    impl ObjectStore for MemoryStore {
        fn bucket(&self) -> &'static str {
            "memory"
        }

        async fn put_object(&self, key: &str, body: Vec<u8>) -> Result<(), BoxError> {
            self.puts.lock().unwrap().push(key.to_owned());
            self.objects.lock().unwrap().insert(key.to_owned(), body);
            Ok(())
        }

        async fn get_object(&self, key: &str) -> Result<Option<Vec<u8>>, BoxError> {
            Ok(self.objects.lock().unwrap().get(key).cloned())
        }

        async fn create_multipart_upload(&self, key: &str) -> Result<String, BoxError> {
            let upload_id = format!("upload-of-{key}");
            self.uploads.lock().unwrap().insert(upload_id.clone(), Vec::new());
            Ok(upload_id)
        }

        async fn upload_part(&self, _key: &str, upload_id: &str, part: i32, body: Vec<u8>) -> Result<String, BoxError> {
            if self.fail_part_from.is_some_and(|from| part >= from) {
                return Err("InternalError: try again".into());
            }
            self.uploads.lock().unwrap().get_mut(upload_id).ok_or("no such upload")?.push((part, body));
            Ok(format!("etag-{part}"))
        }

        async fn complete_multipart_upload(&self, key: &str, upload_id: &str, parts: Vec<(i32, String)>) -> Result<(), BoxError> {
            let uploaded = self.uploads.lock().unwrap().remove(upload_id).ok_or("no such upload")?;
            assert_eq!(parts.len(), uploaded.len());
            for (index, (number, _)) in uploaded.iter().enumerate() {
                assert_eq!(*number, index as i32 + 1, "parts in order");
            }
            for (number, body) in &uploaded[..uploaded.len().saturating_sub(1)] {
                assert!(body.len() >= self.min_part_bytes, "part {number} is {} bytes, below the minimum", body.len());
            }
            let body = uploaded.into_iter().flat_map(|(_, body)| body).collect();
            self.objects.lock().unwrap().insert(key.to_owned(), body);
            Ok(())
        }

        async fn abort_multipart_upload(&self, key: &str, upload_id: &str) -> Result<(), BoxError> {
            self.uploads.lock().unwrap().remove(upload_id);
            self.aborted.lock().unwrap().push(key.to_owned());
            Ok(())
        }

        async fn list_keys(&self, prefix: &str) -> Result<Vec<String>, BoxError> {
            Ok(self.objects.lock().unwrap().keys().filter(|key| key.starts_with(prefix)).cloned().collect())
        }

        async fn delete_keys(&self, keys: &[String]) -> Result<(), BoxError> {
            let mut objects = self.objects.lock().unwrap();
            for key in keys {
                objects.remove(key);
            }
            Ok(())
        }
    }
}
