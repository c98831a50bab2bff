//! The provider's Anthropic key (managed mode), as the requests that forward to Anthropic see it.
//!
//! From the environment it is there at start. From Secrets Manager it is read by a task started at cold start
//! ([`ProviderKey::read_now`]), so the function's init does not wait for a network call: the first request that
//! needs the key waits for that one read, most of which overlaps the rest of the cold start and the request's
//! own gateway-key lookup. A read that fails (the secret is unreadable or holds no key) is logged with the
//! secret's id, and the requests that need the key are answered `ApiError::Unavailable` (the proxy's 529
//! `overloaded_error` with `Retry-After`, which clients retry); the next such request at least
//! [`RETRY_INTERVAL`] later reads the secret again, so a key put in after the deployment reaches running
//! instances. Once read, the key is kept for the life of the process.

use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use metering_core::error::{ApiError, Detail};
use secrecy::SecretString;
use tokio::sync::OnceCell;
use tokio::time::Instant;

/// How long a failed read answers for the secret before it is read again.
pub const RETRY_INTERVAL: Duration = Duration::from_secs(1);

/// The message of the refusal while the key cannot be read (the secret's id and the cause go to the log only).
pub const KEY_UNAVAILABLE: &str = "the gateway's Anthropic key is not available; its operator has been told (see the log)";

/// Where a secret key is read from (Secrets Manager in AWS and on the local stack's moto).
#[async_trait]
pub trait SecretKeySource: Send + Sync {
    /// The secret's name or ARN, for the log.
    fn secret_id(&self) -> &str;
    /// The key the secret holds now.
    async fn read(&self) -> Result<SecretString, Detail>;
}

/// The provider key of the proxy's settings.
#[derive(Clone)]
pub enum ProviderKey {
    /// Passthrough mode: the client's own credentials go upstream.
    None,
    /// Known at start (`ANTHROPIC_API_KEY`).
    Ready(SecretString),
    /// Read from a secret (`ANTHROPIC_API_KEY_SECRET_ID`).
    FromSecret(Arc<SecretKey>),
}

impl fmt::Debug for ProviderKey {
    // Never print the key itself.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::None => f.write_str("None"),
            Self::Ready(_) => f.write_str("Ready(<redacted>)"),
            Self::FromSecret(secret) => f.debug_tuple("FromSecret").field(&secret.source.secret_id()).finish(),
        }
    }
}

impl From<Option<SecretString>> for ProviderKey {
    fn from(key: Option<SecretString>) -> Self {
        key.map_or(Self::None, Self::Ready)
    }
}

impl ProviderKey {
    /// A key read from `source`, not read yet.
    pub fn from_secret(source: Arc<dyn SecretKeySource>) -> Self {
        Self::FromSecret(Arc::new(SecretKey { source, key: OnceCell::new(), last_failure: Mutex::new(None) }))
    }

    /// Starts reading a secret's key in the background (nothing to do for the other kinds); a failure is logged.
    pub fn read_now(&self) {
        if let Self::FromSecret(secret) = self {
            let secret = Arc::clone(secret);
            tokio::spawn(async move {
                let _ = secret.key().await;
            });
        }
    }

    /// The key to send upstream (`None` in passthrough mode), or `Unavailable` while a secret cannot be read.
    pub async fn get(&self) -> Result<Option<&SecretString>, ApiError> {
        match self {
            Self::None => Ok(None),
            Self::Ready(key) => Ok(Some(key)),
            Self::FromSecret(secret) => secret.key().await.map(Some),
        }
    }
}

pub struct SecretKey {
    source: Arc<dyn SecretKeySource>,
    key: OnceCell<SecretString>,
    /// When the last read failed: until `RETRY_INTERVAL` later the requests are refused without a read.
    last_failure: Mutex<Option<Instant>>,
}

impl SecretKey {
    async fn key(&self) -> Result<&SecretString, ApiError> {
        // One read at a time: the requests that come during a read wait for it.
        self.key
            .get_or_try_init(|| async {
                let recent_failure = self
                    .last_failure
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .is_some_and(|failed| failed.elapsed() < RETRY_INTERVAL);
                if recent_failure {
                    return Err(unavailable());
                }
                self.source.read().await.map_err(|detail| {
                    tracing::error!(secret_id = self.source.secret_id(), error = %detail, "the provider's Anthropic key could not be read from Secrets Manager");
                    *self.last_failure.lock().unwrap_or_else(PoisonError::into_inner) = Some(Instant::now());
                    unavailable()
                })
            })
            .await
    }
}

fn unavailable() -> ApiError {
    ApiError::Unavailable { message: KEY_UNAVAILABLE.to_owned(), retry_after_seconds: RETRY_INTERVAL.as_secs().max(1) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::ExposeSecret;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A secret that holds no key until `put` is called, counting its reads.
    struct Secret {
        id: String,
        key: Mutex<Option<String>>,
        reads: AtomicUsize,
    }

    #[async_trait]
    impl SecretKeySource for Secret {
        fn secret_id(&self) -> &str {
            &self.id
        }
        async fn read(&self) -> Result<SecretString, Detail> {
            self.reads.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(50)).await;
            self.key.lock().unwrap().clone().map(SecretString::from).ok_or_else(|| Detail::new("the secret holds no key"))
        }
    }

    fn secret(key: Option<&str>) -> Arc<Secret> {
        Arc::new(Secret { id: "provider-key".to_owned(), key: Mutex::new(key.map(str::to_owned)), reads: AtomicUsize::new(0) })
    }

    #[tokio::test(start_paused = true)]
    async fn a_secret_is_read_once_by_the_background_read_and_the_requests_that_wait_for_it() {
        let source = secret(Some("sk-ant-secret"));
        let key = ProviderKey::from_secret(source.clone());
        key.read_now();
        tokio::task::yield_now().await;
        let (a, b) = tokio::join!(key.get(), key.get());
        assert_eq!(a.unwrap().unwrap().expose_secret(), "sk-ant-secret");
        assert_eq!(b.unwrap().unwrap().expose_secret(), "sk-ant-secret");
        assert_eq!(key.get().await.unwrap().unwrap().expose_secret(), "sk-ant-secret");
        assert_eq!(source.reads.load(Ordering::SeqCst), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_secret_without_a_key_is_unavailable_and_is_read_again_after_the_retry_interval() {
        let source = secret(None);
        let key = ProviderKey::from_secret(source.clone());
        let refused = key.get().await.unwrap_err();
        assert!(matches!(&refused, ApiError::Unavailable { message, retry_after_seconds: 1 } if message == KEY_UNAVAILABLE));
        assert!(!refused.to_string().contains("provider-key"), "the secret's id is for the log only");
        // Within the interval: refused without a read.
        assert!(key.get().await.is_err());
        assert_eq!(source.reads.load(Ordering::SeqCst), 1);
        // The operator puts the key in; after the interval the next request reads it.
        *source.key.lock().unwrap() = Some("sk-ant-put-later".to_owned());
        tokio::time::advance(RETRY_INTERVAL).await;
        assert_eq!(key.get().await.unwrap().unwrap().expose_secret(), "sk-ant-put-later");
        assert_eq!(source.reads.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn keys_known_at_start_need_no_read() {
        assert!(ProviderKey::None.get().await.unwrap().is_none());
        let ready = ProviderKey::from(Some(SecretString::from("sk-ant-env")));
        assert_eq!(ready.get().await.unwrap().unwrap().expose_secret(), "sk-ant-env");
        assert_eq!(format!("{ready:?}"), "Ready(<redacted>)");
    }
}
