//! Waiting for conditions, and probing HTTP endpoints.
//!
//! Containers start, become healthy and answer asynchronously. Tests never sleep a fixed time
//! and hope: they poll the condition at short intervals until it holds or a deadline passes,
//! and then fail naming what they waited for. A condition is any closure returning `bool`,
//! `Option<T>` or `Result<T, E>` (the last error is shown when the deadline passes).

use std::future::Future;
use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

/// What a polled condition returns: settled (with a value) or not yet.
pub trait Settled {
    /// What [`eventually`] returns once settled.
    type Value;
    /// `Ok(value)` when the condition holds, else `Err(description of the last attempt)`.
    fn settled(self) -> Result<Self::Value, String>;
}

impl Settled for bool {
    type Value = ();
    fn settled(self) -> Result<(), String> {
        if self { Ok(()) } else { Err("false".into()) }
    }
}

impl<T> Settled for Option<T> {
    type Value = T;
    fn settled(self) -> Result<T, String> {
        self.ok_or_else(|| "None".into())
    }
}

impl<T, E: std::fmt::Debug> Settled for Result<T, E> {
    type Value = T;
    fn settled(self) -> Result<T, String> {
        self.map_err(|e| format!("{e:?}"))
    }
}

/// Pause between attempts: short at first, growing to at most 250 ms.
fn next_interval(current: Duration) -> Duration {
    (current * 3 / 2).min(Duration::from_millis(250))
}

const FIRST_INTERVAL: Duration = Duration::from_millis(10);

/// Polls `f` until it returns `true`, `Some(v)` or `Ok(v)`, and returns `()` or `v`.
///
/// Each attempt may itself take until the deadline (at least 2 s).
///
/// # Panics
/// When `timeout` passes first: the message names `what` and the last attempt's result.
pub async fn eventually<F, Fut, T>(what: &str, timeout: Duration, mut f: F) -> T::Value
where
    F: FnMut() -> Fut,
    Fut: Future<Output = T>,
    T: Settled,
{
    let start = Instant::now();
    let deadline = start + timeout;
    let mut interval = FIRST_INTERVAL;
    let mut attempts = 0u32;
    loop {
        attempts += 1;
        let budget = deadline.saturating_duration_since(Instant::now()).max(Duration::from_secs(2));
        let last = match tokio::time::timeout(budget, f()).await {
            Ok(outcome) => match outcome.settled() {
                Ok(value) => return value,
                Err(last) => last,
            },
            Err(_) => format!("attempt still running after {budget:?}"),
        };
        if Instant::now() >= deadline {
            panic!("timed out after {:?} ({attempts} attempts) waiting for {what}; last: {last}", start.elapsed());
        }
        tokio::time::sleep(interval.min(deadline.saturating_duration_since(Instant::now()))).await;
        interval = next_interval(interval);
    }
}

/// [`eventually`] for sync tests: polls the blocking closure `f`.
///
/// # Panics
/// When `timeout` passes first, naming `what`.
pub fn eventually_sync<F, T>(what: &str, timeout: Duration, mut f: F) -> T::Value
where
    F: FnMut() -> T,
    T: Settled,
{
    let start = Instant::now();
    let deadline = start + timeout;
    let mut interval = FIRST_INTERVAL;
    let mut attempts = 0u32;
    loop {
        attempts += 1;
        let last = match f().settled() {
            Ok(value) => return value,
            Err(last) => last,
        };
        if Instant::now() >= deadline {
            panic!("timed out after {:?} ({attempts} attempts) waiting for {what}; last: {last}", start.elapsed());
        }
        std::thread::sleep(interval.min(deadline.saturating_duration_since(Instant::now())));
        interval = next_interval(interval);
    }
}

/// How long one HTTP probe may take (connect, and each read).
pub const HTTP_TIMEOUT: Duration = Duration::from_secs(2);

/// `GET /` on `addr` (`"127.0.0.1:8080"`): `Some((status, body))`, or `None` when nothing
/// answers properly within a short timeout. Blocking (use it in `eventually_sync`, or in an
/// async test on a multi-thread runtime).
pub fn http_get(addr: &str) -> Option<(u16, String)> {
    http_request(addr, "GET", "/", &[])
}

/// An HTTP/1.1 request with extra `headers` to `addr`: `Some((status, body))`, or `None`
/// when nothing answers properly within [`HTTP_TIMEOUT`] per step.
pub fn http_request(addr: &str, method: &str, path: &str, headers: &[(&str, &str)]) -> Option<(u16, String)> {
    let sockaddr = addr.to_socket_addrs().ok()?.next()?;
    let mut stream = TcpStream::connect_timeout(&sockaddr, HTTP_TIMEOUT).ok()?;
    stream.set_read_timeout(Some(HTTP_TIMEOUT)).ok()?;
    stream.set_write_timeout(Some(HTTP_TIMEOUT)).ok()?;
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).ok()?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).ok()?;
    parse_response(&raw)
}

fn parse_response(raw: &[u8]) -> Option<(u16, String)> {
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = std::str::from_utf8(&raw[..split]).ok()?;
    let body = &raw[split + 4..];
    let mut lines = head.split("\r\n");
    let status: u16 = lines.next()?.split_whitespace().nth(1)?.parse().ok()?;
    let chunked = lines.any(|l| {
        let l = l.to_ascii_lowercase();
        l.starts_with("transfer-encoding:") && l.contains("chunked")
    });
    let body = if chunked { dechunk(body)? } else { body.to_vec() };
    Some((status, String::from_utf8_lossy(&body).into_owned()))
}

fn dechunk(mut data: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let eol = data.windows(2).position(|w| w == b"\r\n")?;
        let size_field = std::str::from_utf8(&data[..eol]).ok()?;
        let size = usize::from_str_radix(size_field.split(';').next()?.trim(), 16).ok()?;
        data = &data[eol + 2..];
        if size == 0 {
            return Some(out);
        }
        out.extend_from_slice(data.get(..size)?);
        data = data.get(size + 2..)?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_plain_and_chunked_responses() {
        let plain = b"HTTP/1.1 200 OK\r\nContent-Length: 14\r\n\r\nHello Docker!!";
        assert_eq!(parse_response(plain), Some((200, "Hello Docker!!".into())));
        let chunked =
            b"HTTP/1.1 401 Unauthorized\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nHello\r\n3\r\n!!!\r\n0\r\n\r\n";
        assert_eq!(parse_response(chunked), Some((401, "Hello!!!".into())));
        assert_eq!(parse_response(b"garbage"), None);
    }

    #[test]
    fn eventually_sync_returns_the_value() {
        let mut n = 0;
        let v = eventually_sync("n to reach 3", Duration::from_secs(5), || {
            n += 1;
            (n >= 3).then_some(n)
        });
        assert_eq!(v, 3);
    }

    #[test]
    #[should_panic(expected = "waiting for the impossible")]
    fn eventually_sync_panics_naming_what() {
        eventually_sync("the impossible", Duration::from_millis(50), || false);
    }
}
