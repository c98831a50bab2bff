//! A bare HTTP/1.1 listener on 127.0.0.1 for tests of the AWS adapters: each request's body is kept and
//! answered with one canned response (`connection: close`, so every SDK attempt is a connection).

use std::fmt::Write as _;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub struct CannedResponse {
    pub status_line: &'static str,
    pub headers: Vec<(&'static str, &'static str)>,
    pub body: &'static str,
}

/// Serves `answer` to every request until the test ends; returns the address and the bodies received.
pub fn serve(answer: CannedResponse) -> (SocketAddr, Arc<Mutex<Vec<Vec<u8>>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap();
    let received = Arc::new(Mutex::new(Vec::new()));
    let bodies = Arc::clone(&received);
    std::thread::spawn(move || {
        for socket in listener.incoming() {
            let Ok(mut socket) = socket else { continue };
            if let Some(body) = read_request(&mut socket) {
                bodies.lock().unwrap().push(body);
                let mut text = format!("{}\r\n", answer.status_line);
                for (name, value) in &answer.headers {
                    let _ = write!(text, "{name}: {value}\r\n");
                }
                let _ = write!(text, "content-length: {}\r\nconnection: close\r\n\r\n{}", answer.body.len(), answer.body);
                let _ = socket.write_all(text.as_bytes());
            }
        }
    });
    (address, received)
}

fn read_request(socket: &mut TcpStream) -> Option<Vec<u8>> {
    socket.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    let mut received = Vec::new();
    let mut buffer = [0u8; 8192];
    let body_start = loop {
        let read = socket.read(&mut buffer).ok()?;
        if read == 0 {
            return None;
        }
        received.extend_from_slice(&buffer[..read]);
        if let Some(end) = received.windows(4).position(|window| window == b"\r\n\r\n") {
            break end + 4;
        }
    };
    let head = String::from_utf8_lossy(&received[..body_start]).to_ascii_lowercase();
    let length: usize =
        head.lines().find_map(|line| line.strip_prefix("content-length:")).and_then(|v| v.trim().parse().ok()).unwrap_or(0);
    while received.len() < body_start + length {
        let read = socket.read(&mut buffer).ok()?;
        if read == 0 {
            return None;
        }
        received.extend_from_slice(&buffer[..read]);
    }
    Some(received[body_start..body_start + length].to_vec())
}
