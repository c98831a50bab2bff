//! The TLS side of a process's HTTP clients: the system's root certificates, read once per process
//! ([`process_root_certificates`]), and the one HTTP client of every AWS SDK client of the process, which builds
//! its TLS connector when the first request needs it instead of when each SDK client is constructed.
//!
//! The SDK's default HTTPS client builds a throwaway TLS connector in `validate_base_client_config`, which runs
//! in every service client's `Client::new`, "so that native certs load at client initialization time": the
//! system's root certificates are read and parsed during the function's init, and a trust store is parsed again
//! for every service client. A Lambda function builds its clients
//! in init, so that is all init time, before the runtime asks for its first event. [`DeferredTlsHttpClient`]
//! leaves that validation out: the connector is built by the first request, in a client shared by all the SDK
//! clients of the process, which also share its connection pool.
//! [`process_http_client`] starts reading the roots on a thread of their own meanwhile, so that reading (the
//! costly part: files, PEM) overlaps the rest of init and the wait for the first event. The proxy's HTTPS client
//! to Anthropic trusts the same roots, read once for both.

use std::fmt;
use std::sync::OnceLock;

use aws_smithy_http_client::proxy::ProxyConfig;
use aws_smithy_http_client::tls::rustls_provider::CryptoMode;
use aws_smithy_http_client::tls::{Provider, TlsContext, TrustStore};
use aws_smithy_http_client::{Builder, ConnectorBuilder};
use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_runtime_api::client::http::{HttpClient, HttpConnectorSettings, SharedHttpClient, SharedHttpConnector};
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_runtime_api::shared::IntoShared;
use aws_smithy_types::config_bag::ConfigBag;
use base64::Engine;
use rustls::pki_types::CertificateDer;
use rustls::RootCertStore;

/// The system's trusted root certificates, as rustls-native-certs finds them (`SSL_CERT_FILE` and
/// `SSL_CERT_DIR` when set, else the platform's bundle and directories), keeping those a rustls trust store
/// accepts.
pub struct RootCertificates {
    certificates: Vec<CertificateDer<'static>>,
    pem: Vec<u8>,
}

impl fmt::Debug for RootCertificates {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RootCertificates").field("count", &self.certificates.len()).finish_non_exhaustive()
    }
}

impl RootCertificates {
    /// Those of `found` that a rustls trust store accepts (the others are left out, as the SDK and reqwest
    /// leave them out of theirs), each once.
    pub fn accepted_of(found: Vec<CertificateDer<'static>>) -> Self {
        let mut certificates: Vec<CertificateDer<'static>> = Vec::with_capacity(found.len());
        for certificate in found {
            let accepted = RootCertStore::empty().add(certificate.clone()).is_ok();
            if accepted && !certificates.contains(&certificate) {
                certificates.push(certificate);
            }
        }
        let mut pem = Vec::new();
        for certificate in &certificates {
            pem.extend_from_slice(b"-----BEGIN CERTIFICATE-----\n");
            let encoded = base64::engine::general_purpose::STANDARD.encode(certificate.as_ref());
            for line in encoded.as_bytes().chunks(64) {
                pem.extend_from_slice(line);
                pem.push(b'\n');
            }
            pem.extend_from_slice(b"-----END CERTIFICATE-----\n");
        }
        Self { certificates, pem }
    }

    /// The certificates, DER-encoded.
    pub fn certificates(&self) -> &[CertificateDer<'static>] {
        &self.certificates
    }

    /// The certificates, PEM-encoded one after the other.
    pub fn pem(&self) -> &[u8] {
        &self.pem
    }
}

static PROCESS_ROOTS: OnceLock<RootCertificates> = OnceLock::new();

/// The process's root certificates: read by the first call (the others wait for it), then kept.
pub fn process_root_certificates() -> &'static RootCertificates {
    PROCESS_ROOTS.get_or_init(|| {
        let found = rustls_native_certs::load_native_certs();
        if !found.errors.is_empty() {
            tracing::warn!(errors = ?found.errors, "some of the system's root certificates could not be read");
        }
        let roots = RootCertificates::accepted_of(found.certs);
        if roots.certificates.is_empty() {
            tracing::warn!("no root certificate found: no TLS connection can be verified");
        }
        roots
    })
}

/// Whether the process's root certificates have been read.
pub fn process_root_certificates_are_read() -> bool {
    PROCESS_ROOTS.get().is_some()
}

/// Starts reading the process's root certificates on a thread of its own, so that the first TLS client to need
/// them finds them read, or waits for that one reading.
pub fn read_process_root_certificates_in_background() {
    let spawned = std::thread::Builder::new().name("tls-roots".into()).spawn(|| {
        process_root_certificates();
    });
    if let Err(error) = spawned {
        tracing::warn!(error = %error, "could not start a thread to read the root certificates; the first TLS client will");
    }
}

/// The process's SDK HTTP client: [`DeferredTlsHttpClient::sdk_default`], made by the first call, which also
/// starts reading the roots in the background, and shared by every later one (so by every SDK configuration of
/// the process).
pub fn process_http_client() -> DeferredTlsHttpClient {
    static CLIENT: OnceLock<DeferredTlsHttpClient> = OnceLock::new();
    CLIENT
        .get_or_init(|| {
            read_process_root_certificates_in_background();
            DeferredTlsHttpClient::sdk_default()
        })
        .clone()
}

/// An [`HttpClient`] that passes everything to `inner` but the validation at SDK client construction.
#[derive(Clone)]
pub struct DeferredTlsHttpClient {
    inner: SharedHttpClient,
}

impl fmt::Debug for DeferredTlsHttpClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DeferredTlsHttpClient").finish_non_exhaustive()
    }
}

impl DeferredTlsHttpClient {
    /// The SDK's default HTTPS client (hyper 1, rustls with aws-lc, `HTTPS_PROXY` and `NO_PROXY` from the
    /// environment), as `BehaviorVersion::latest()` builds it, deferred, trusting
    /// [`process_root_certificates`] (the same roots the SDK would read itself).
    pub fn sdk_default() -> Self {
        let inner = Builder::new().build_with_connector_fn(|settings, runtime_components| {
            let trust_store =
                TrustStore::empty().with_native_roots(false).with_pem_certificate(process_root_certificates().pem());
            let mut connector = ConnectorBuilder::default().tls_provider(Provider::Rustls(CryptoMode::AwsLc));
            match TlsContext::builder().with_trust_store(trust_store).build() {
                Ok(context) => {
                    connector.set_tls_context(context);
                }
                Err(error) => tracing::warn!(%error, "the AWS SDK's TLS connector falls back to its own roots"),
            }
            connector.set_connector_settings(settings.cloned());
            if let Some(components) = runtime_components {
                connector.set_sleep_impl(components.sleep_impl());
            }
            connector.set_proxy_config(Some(ProxyConfig::from_env()));
            connector.build()
        });
        Self::wrapping(inner)
    }

    /// `inner`, deferred.
    pub fn wrapping(inner: impl HttpClient + 'static) -> Self {
        Self { inner: inner.into_shared() }
    }
}

impl HttpClient for DeferredTlsHttpClient {
    fn http_connector(&self, settings: &HttpConnectorSettings, components: &RuntimeComponents) -> SharedHttpConnector {
        self.inner.http_connector(settings, components)
    }

    // `validate_base_client_config` is left as the trait's no-op: that is the point of this type.

    fn validate_final_config(&self, runtime_components: &RuntimeComponents, cfg: &ConfigBag) -> Result<(), BoxError> {
        self.inner.validate_final_config(runtime_components, cfg)
    }

    fn connector_metadata(&self) -> Option<aws_smithy_runtime_api::client::connector_metadata::ConnectorMetadata> {
        self.inner.connector_metadata()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    use aws_smithy_runtime_api::client::http::{HttpConnector, HttpConnectorFuture};
    use aws_smithy_runtime_api::client::orchestrator::{HttpRequest, HttpResponse};
    use aws_smithy_runtime_api::client::runtime_components::RuntimeComponentsBuilder;
    use aws_smithy_types::body::SdkBody;
    use rustls::pki_types::pem::PemObject;

    /// What the SDK asked of a [`CountingClient`].
    #[derive(Debug, Default)]
    struct Counts {
        validations: AtomicUsize,
        connectors: AtomicUsize,
    }

    /// A client that counts what the SDK asks of it and answers every request with an empty DynamoDB table list.
    #[derive(Debug)]
    struct CountingClient(Arc<Counts>);

    #[derive(Debug)]
    struct EmptyTableList;

    impl HttpConnector for EmptyTableList {
        fn call(&self, _request: HttpRequest) -> HttpConnectorFuture {
            HttpConnectorFuture::ready(Ok(HttpResponse::new(200.try_into().unwrap(), SdkBody::from(r#"{"TableNames":[]}"#))))
        }
    }

    impl HttpClient for CountingClient {
        fn http_connector(&self, _: &HttpConnectorSettings, _: &RuntimeComponents) -> SharedHttpConnector {
            self.0.connectors.fetch_add(1, Ordering::SeqCst);
            SharedHttpConnector::new(EmptyTableList)
        }

        fn validate_base_client_config(&self, _: &RuntimeComponentsBuilder, _: &ConfigBag) -> Result<(), BoxError> {
            self.0.validations.fetch_add(1, Ordering::SeqCst);
            Ok(())
        }
    }

    fn sdk_config(http_client: DeferredTlsHttpClient) -> aws_config::SdkConfig {
        aws_config::SdkConfig::builder()
            .behavior_version(aws_config::BehaviorVersion::latest())
            .region(aws_config::Region::new("us-east-1"))
            .credentials_provider(aws_sdk_dynamodb::config::SharedCredentialsProvider::new(
                aws_sdk_dynamodb::config::Credentials::new("AKIDTEST", "secret", None, None, "test"),
            ))
            .http_client(http_client)
            .build()
    }

    #[tokio::test]
    async fn sdk_clients_are_built_without_a_connector_and_their_first_request_builds_it() {
        let counting = Arc::new(Counts::default());
        let config = sdk_config(DeferredTlsHttpClient::wrapping(CountingClient(Arc::clone(&counting))));

        let dynamodb = aws_sdk_dynamodb::Client::new(&config);
        let _bedrock = aws_sdk_bedrockruntime::Client::new(&config);
        let _logs = aws_sdk_cloudwatchlogs::Client::new(&config);
        assert_eq!(counting.validations.load(Ordering::SeqCst), 0, "client construction built a connector");
        assert_eq!(counting.connectors.load(Ordering::SeqCst), 0);

        let tables = dynamodb.list_tables().send().await.expect("the request goes through the inner client");
        assert!(tables.table_names().is_empty());
        assert_eq!(counting.connectors.load(Ordering::SeqCst), 1);
        assert_eq!(counting.validations.load(Ordering::SeqCst), 0);
    }

    /// Two public root certificates (Let's Encrypt's ISRG Root X1 and X2), as a system store holds them.
    fn public_roots() -> Vec<CertificateDer<'static>> {
        [&include_bytes!("../tests/fixtures/isrg-root-x1.pem")[..], &include_bytes!("../tests/fixtures/isrg-root-x2.pem")[..]]
            .iter()
            .map(|pem| CertificateDer::from_pem_slice(pem).expect("a PEM certificate"))
            .collect()
    }

    #[test]
    fn the_roots_kept_are_those_a_trust_store_accepts_each_once_and_their_pem_holds_them_all() {
        let [x1, x2] = <[_; 2]>::try_from(public_roots()).unwrap();
        let not_a_certificate = CertificateDer::from(b"not a certificate".to_vec());
        let roots = RootCertificates::accepted_of(vec![x1.clone(), not_a_certificate, x2.clone(), x1.clone()]);
        assert_eq!(roots.certificates(), [x1.clone(), x2.clone()]);
        let decoded: Vec<CertificateDer<'static>> =
            CertificateDer::pem_slice_iter(roots.pem()).collect::<Result<_, _>>().expect("valid PEM");
        assert_eq!(decoded, [x1, x2]);
        let mut store = RootCertStore::empty();
        for certificate in decoded {
            store.add(certificate).expect("what the SDK adds to its trust store, one by one, must be accepted");
        }
        assert_eq!(store.len(), 2);
    }

    #[test]
    fn no_root_found_gives_an_empty_store() {
        let roots = RootCertificates::accepted_of(Vec::new());
        assert!(roots.certificates().is_empty() && roots.pem().is_empty());
    }

    #[test]
    fn the_sdk_connector_builds_on_the_process_roots() {
        // The SDK panics on a PEM certificate its trust store refuses: building the connector on this machine's
        // roots (through the trust store the SDK is given) must not.
        DeferredTlsHttpClient::sdk_default()
            .inner
            .validate_base_client_config(&RuntimeComponentsBuilder::new("test"), &ConfigBag::base())
            .expect("a connector");
    }
}
