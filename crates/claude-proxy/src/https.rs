//! HTTPS clients (reqwest) that trust the process's root certificates
//! ([`metering_core::sdk_http::process_root_certificates`]), read once for them and for the AWS SDK's clients.

use metering_core::sdk_http::process_root_certificates;

/// A reqwest client builder whose trust store is the process's root certificates, and nothing else.
pub fn client_builder() -> reqwest::Result<reqwest::ClientBuilder> {
    let mut builder = reqwest::Client::builder().tls_built_in_root_certs(false);
    for certificate in process_root_certificates().certificates() {
        builder = builder.add_root_certificate(reqwest::Certificate::from_der(certificate)?);
    }
    Ok(builder)
}
