//! The process's root certificates are read in the background from the first SDK configuration on (its own
//! test binary: a process in which nothing else has read them).

use std::time::{Duration, Instant};

use metering_core::sdk_http::{process_http_client, process_root_certificates_are_read};

#[test]
fn the_first_sdk_http_client_starts_reading_the_roots_without_waiting_for_them() {
    assert!(!process_root_certificates_are_read());
    let _client = process_http_client();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !process_root_certificates_are_read() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(1));
    }
    assert!(process_root_certificates_are_read(), "nothing read the roots in the background");
}
