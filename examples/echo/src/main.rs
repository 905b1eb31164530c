//! `echo`: berth's demo and test app.
//!
//! A tiny HTTP/1.1 server (std::net only, one thread per connection, every
//! response carries `Connection: close`) built as a static binary so that it
//! runs in a `FROM scratch` image (see `examples/echo/build-image.sh`).
//!
//! Listens on `0.0.0.0:$PORT` (default 8080). Routes (GET; HEAD answers the
//! same status and headers without a body; other methods get 405):
//!
//! | path              | answer                                                        |
//! |-------------------|---------------------------------------------------------------|
//! | `/`               | 200, body exactly `Hello Docker!!` — **no trailing newline**  |
//! | `/env/NAME`       | 200 with the value of env var `NAME` (no newline), 404 if unset |
//! | `/file/some/path` | 200 with the bytes of `/some/path`, 404 if it does not exist  |
//! | anything else     | 404                                                           |
//!
//! Paths are percent-decoded and a query string is ignored.
//!
//! On start, if `BOOT_LOG` names a file, the line `boot <id>\n` is appended to
//! it (parent directories are created); `<id>` is the hostname (inside a
//! container: the short container id), or `pid-<pid>` if none is known. If the
//! line cannot be written, `echo` exits with code 1 rather than run silently
//! without it.
//!
//! Other modes:
//! * `echo --probe`: exec-form healthcheck (`["CMD", "/echo", "--probe"]`, no
//!   shell needed): sends `GET /` to `127.0.0.1:$PORT`, exits 0 on a 200
//!   answer, 1 otherwise.
//! * `echo --version`: prints `echo <version>`.
//!
//! SIGTERM and SIGINT end the process at once with exit code 0. As PID 1 in a
//! container the kernel applies no default action to these signals, so
//! without a handler `docker stop` would wait out its whole grace period.

use std::ffi::OsString;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

const DEFAULT_PORT: u16 = 8080;
const GREETING: &str = "Hello Docker!!";
/// Upper bound on a request head (request line + headers), in bytes.
const MAX_HEAD: u64 = 16 * 1024;
const IO_TIMEOUT: Duration = Duration::from_secs(10);
const PROBE_TIMEOUT: Duration = Duration::from_secs(3);

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let port = match port_from_env() {
        Ok(port) => port,
        Err(err) => {
            eprintln!("echo: {err}");
            return ExitCode::from(2);
        }
    };
    match args.first().map(String::as_str) {
        None => serve(port),
        Some("--version" | "-V") => {
            println!("echo {}", env!("CARGO_PKG_VERSION"));
            ExitCode::SUCCESS
        }
        Some("--probe") => match probe(port) {
            Ok(()) => ExitCode::SUCCESS,
            Err(err) => {
                eprintln!("echo --probe: {err}");
                ExitCode::FAILURE
            }
        },
        Some("--help" | "-h") => {
            println!("usage: echo [--probe | --version]   (env: PORT, BOOT_LOG)");
            ExitCode::SUCCESS
        }
        Some(other) => {
            eprintln!("echo: unknown argument {other:?} (try --help)");
            ExitCode::from(2)
        }
    }
}

fn port_from_env() -> Result<u16, String> {
    match std::env::var("PORT") {
        Err(std::env::VarError::NotPresent) => Ok(DEFAULT_PORT),
        Ok(s) if s.is_empty() => Ok(DEFAULT_PORT),
        Ok(s) => s.trim().parse().map_err(|_| format!("invalid PORT {s:?}")),
        Err(std::env::VarError::NotUnicode(s)) => Err(format!("invalid PORT {s:?}")),
    }
}

fn serve(port: u16) -> ExitCode {
    signals::exit_on_term();
    if let Some(path) = std::env::var_os("BOOT_LOG").filter(|p| !p.is_empty())
        && let Err(err) = append_boot_line(Path::new(&path), &boot_id())
    {
        eprintln!("echo: cannot append to BOOT_LOG {}: {err}", Path::new(&path).display());
        return ExitCode::FAILURE;
    }
    let listener = match TcpListener::bind(SocketAddr::from(([0, 0, 0, 0], port))) {
        Ok(l) => l,
        Err(err) => {
            eprintln!("echo: cannot listen on 0.0.0.0:{port}: {err}");
            return ExitCode::FAILURE;
        }
    };
    println!("echo {} listening on 0.0.0.0:{port}", env!("CARGO_PKG_VERSION"));
    for stream in listener.incoming() {
        match stream {
            Ok(stream) => {
                std::thread::spawn(move || {
                    // A client that goes away mid-request is not our problem.
                    let _ = handle_connection(stream);
                });
            }
            Err(err) => eprintln!("echo: accept: {err}"),
        }
    }
    ExitCode::SUCCESS
}

/// The id written to `BOOT_LOG`: the hostname if known, else `pid-<pid>`.
fn boot_id() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok())
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| format!("pid-{}", std::process::id()))
}

fn append_boot_line(path: &Path, id: &str) -> io::Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    let mut f = std::fs::OpenOptions::new().create(true).append(true).open(path)?;
    // One write call, so concurrent appenders do not interleave within a line.
    f.write_all(format!("boot {id}\n").as_bytes())
}

/// Sends `GET /` to 127.0.0.1:`port`; Ok if the answer's status is 200.
fn probe(port: u16) -> Result<(), String> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let mut stream = TcpStream::connect_timeout(&addr, PROBE_TIMEOUT).map_err(|e| format!("connect {addr}: {e}"))?;
    stream.set_read_timeout(Some(PROBE_TIMEOUT)).map_err(|e| e.to_string())?;
    stream.set_write_timeout(Some(PROBE_TIMEOUT)).map_err(|e| e.to_string())?;
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .map_err(|e| format!("send: {e}"))?;
    let mut status_line = String::new();
    BufReader::new(stream.take(1024)).read_line(&mut status_line).map_err(|e| format!("read: {e}"))?;
    match status_line.split_whitespace().nth(1) {
        Some("200") => Ok(()),
        _ => Err(format!("unexpected answer {:?}", status_line.trim_end())),
    }
}

fn handle_connection(mut stream: TcpStream) -> io::Result<()> {
    stream.set_read_timeout(Some(IO_TIMEOUT))?;
    stream.set_write_timeout(Some(IO_TIMEOUT))?;
    let response = match read_request_head(&stream)? {
        Some(head) => match parse_request_line(&head) {
            Ok(req) => route(&req, &|name| std::env::var_os(name)),
            Err(err) => Response::text(400, err),
        },
        None => return Ok(()), // connection closed before a full request line
    };
    stream.write_all(&response.to_bytes())?;
    stream.flush()
}

/// Reads up to the blank line that ends the request head. Returns the first
/// line (the request line), or None if the peer closed before sending one.
fn read_request_head(stream: &TcpStream) -> io::Result<Option<String>> {
    let mut reader = BufReader::new(stream.take(MAX_HEAD));
    let mut request_line = String::new();
    if reader.read_line(&mut request_line)? == 0 {
        return Ok(None);
    }
    // Drain the headers; a request body (none expected) is ignored.
    let mut line = String::new();
    loop {
        line.clear();
        if reader.read_line(&mut line)? == 0 || line == "\r\n" || line == "\n" {
            break;
        }
    }
    Ok(Some(request_line))
}

#[derive(Debug, PartialEq, Eq)]
struct Request {
    method: String,
    /// Percent-decoded path, without the query string.
    path: String,
}

fn parse_request_line(line: &str) -> Result<Request, String> {
    let mut parts = line.trim_end_matches(['\r', '\n']).split(' ');
    let (Some(method), Some(target), Some(version), None) = (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err("malformed request line".into());
    };
    if method.is_empty() || !method.bytes().all(|b| b.is_ascii_uppercase()) {
        return Err("malformed method".into());
    }
    if !version.starts_with("HTTP/1.") {
        return Err("unsupported HTTP version".into());
    }
    if !target.starts_with('/') {
        return Err("request target must be an absolute path".into());
    }
    let raw_path = target.split(['?', '#']).next().unwrap_or(target);
    let path = percent_decode(raw_path).ok_or("bad percent-encoding in path")?;
    Ok(Request { method: method.to_owned(), path })
}

fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes.get(i + 1..i + 3)?;
            let hex = std::str::from_utf8(hex).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[derive(Debug, PartialEq, Eq)]
struct Response {
    status: u16,
    content_type: &'static str,
    body: Vec<u8>,
    /// HEAD: send the headers (with the body's length) but not the body.
    head_only: bool,
}

impl Response {
    fn text(status: u16, body: impl Into<String>) -> Self {
        Response { status, content_type: "text/plain; charset=utf-8", body: body.into().into_bytes(), head_only: false }
    }

    fn bytes(body: Vec<u8>) -> Self {
        Response { status: 200, content_type: "application/octet-stream", body, head_only: false }
    }

    fn to_bytes(&self) -> Vec<u8> {
        let reason = match self.status {
            200 => "OK",
            400 => "Bad Request",
            404 => "Not Found",
            405 => "Method Not Allowed",
            _ => "Internal Server Error",
        };
        let mut out = format!(
            "HTTP/1.1 {} {reason}\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: close\r\n",
            self.status,
            self.content_type,
            self.body.len()
        );
        if self.status == 405 {
            out.push_str("Allow: GET, HEAD\r\n");
        }
        out.push_str("\r\n");
        let mut out = out.into_bytes();
        if !self.head_only {
            out.extend_from_slice(&self.body);
        }
        out
    }
}

/// Maps a request to its response. `env` looks up an environment variable
/// (injected so tests need not mutate the process environment).
fn route(req: &Request, env: &dyn Fn(&str) -> Option<OsString>) -> Response {
    let head_only = match req.method.as_str() {
        "GET" => false,
        "HEAD" => true,
        _ => return Response::text(405, "method not allowed\n"),
    };
    let mut response = route_get(&req.path, env);
    response.head_only = head_only;
    response
}

fn route_get(path: &str, env: &dyn Fn(&str) -> Option<OsString>) -> Response {
    if path == "/" {
        return Response::text(200, GREETING);
    }
    if let Some(name) = path.strip_prefix("/env/") {
        if name.is_empty() || name.contains(['/', '=', '\0']) {
            return Response::text(404, "not found\n");
        }
        return match env(name) {
            Some(value) => Response::text(200, value.to_string_lossy()),
            None => Response::text(404, format!("env {name} is not set\n")),
        };
    }
    if let Some(rest) = path.strip_prefix("/file/") {
        if rest.is_empty() || rest.contains('\0') {
            return Response::text(404, "not found\n");
        }
        let file = format!("/{rest}");
        return match std::fs::read(&file) {
            Ok(bytes) => Response::bytes(bytes),
            Err(err) if err.kind() == io::ErrorKind::NotFound => Response::text(404, format!("{file}: no such file\n")),
            Err(err) => Response::text(500, format!("{file}: {err}\n")),
        };
    }
    Response::text(404, "not found\n")
}

#[cfg(unix)]
mod signals {
    //! SIGTERM/SIGINT → `_exit(0)`. Declared by hand (std links libc anyway)
    //! to keep the crate free of dependencies. `_exit` is async-signal-safe,
    //! and the handler touches nothing else, so this is sound.
    use std::os::raw::c_int;

    // Linux signal numbers (identical on every Linux architecture for these two).
    const SIGINT: c_int = 2;
    const SIGTERM: c_int = 15;

    unsafe extern "C" {
        // sighandler_t signal(int, sighandler_t); glibc and musl give it
        // BSD semantics (the handler stays installed, SA_RESTART).
        fn signal(signum: c_int, handler: extern "C" fn(c_int)) -> usize;
        fn _exit(status: c_int) -> !;
    }

    extern "C" fn on_term(_signum: c_int) {
        // SAFETY: _exit is async-signal-safe.
        unsafe { _exit(0) }
    }

    pub fn exit_on_term() {
        // SAFETY: installing a handler that only calls an async-signal-safe function.
        unsafe {
            signal(SIGTERM, on_term);
            signal(SIGINT, on_term);
        }
    }
}

#[cfg(not(unix))]
mod signals {
    pub fn exit_on_term() {}
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get(path: &str) -> Request {
        Request { method: "GET".into(), path: path.into() }
    }

    fn no_env(_: &str) -> Option<OsString> {
        None
    }

    #[test]
    fn parses_request_lines() {
        assert_eq!(parse_request_line("GET / HTTP/1.1\r\n"), Ok(get("/")));
        assert_eq!(parse_request_line("GET /env/FOO?x=1 HTTP/1.0\n"), Ok(get("/env/FOO")));
        assert_eq!(parse_request_line("GET /file/a%20b HTTP/1.1"), Ok(get("/file/a b")));
        let head = parse_request_line("HEAD / HTTP/1.1\r\n").unwrap();
        assert_eq!(head.method, "HEAD");
        for bad in [
            "",
            "GET\r\n",
            "GET /\r\n",
            "GET / HTTP/1.1 extra\r\n",
            "get / HTTP/1.1\r\n",
            "GET / HTTP/2\r\n",
            "GET foo HTTP/1.1\r\n",
            "GET /%zz HTTP/1.1\r\n",
            "GET /%4 HTTP/1.1\r\n",
        ] {
            assert!(parse_request_line(bad).is_err(), "{bad:?} should be rejected");
        }
    }

    #[test]
    fn root_says_hello_without_newline() {
        let r = route(&get("/"), &no_env);
        assert_eq!((r.status, r.body.as_slice()), (200, b"Hello Docker!!".as_slice()));
        let wire = r.to_bytes();
        assert!(wire.starts_with(b"HTTP/1.1 200 OK\r\n"));
        assert!(wire.ends_with(b"\r\n\r\nHello Docker!!"));
        assert!(String::from_utf8_lossy(&wire).contains("Content-Length: 14\r\n"));
    }

    #[test]
    fn env_route() {
        let env = |name: &str| (name == "COLOR").then(|| OsString::from("blue"));
        let r = route(&get("/env/COLOR"), &env);
        assert_eq!((r.status, r.body.as_slice()), (200, b"blue".as_slice()));
        assert_eq!(route(&get("/env/OTHER"), &env).status, 404);
        assert_eq!(route(&get("/env/"), &env).status, 404);
        assert_eq!(route(&get("/env/A/B"), &env).status, 404);
    }

    #[test]
    fn file_route() {
        let path = std::env::temp_dir().join(format!("echo-file-route-{}", std::process::id()));
        std::fs::write(&path, b"on the volume\n").unwrap();
        let url = format!("/file{}", path.display()); // path is absolute: "/file/tmp/..."
        let r = route(&get(&url), &no_env);
        std::fs::remove_file(&path).unwrap();
        assert_eq!((r.status, r.body.as_slice()), (200, b"on the volume\n".as_slice()));
        assert_eq!(route(&get(&url), &no_env).status, 404, "gone after removal");
        assert_eq!(route(&get("/file/"), &no_env).status, 404);
    }

    #[test]
    fn other_paths_and_methods() {
        assert_eq!(route(&get("/nope"), &no_env).status, 404);
        assert_eq!(route(&get("/env"), &no_env).status, 404);
        let post = Request { method: "POST".into(), path: "/".into() };
        let r = route(&post, &no_env);
        assert_eq!(r.status, 405);
        assert!(String::from_utf8_lossy(&r.to_bytes()).contains("Allow: GET, HEAD\r\n"));
        let head = route(&Request { method: "HEAD".into(), path: "/".into() }, &no_env);
        let wire = head.to_bytes();
        assert!(wire.ends_with(b"Content-Length: 14\r\nConnection: close\r\n\r\n"));
    }

    #[test]
    fn boot_log_appends_and_creates_parents() {
        let dir = std::env::temp_dir().join(format!("echo-boot-{}", std::process::id()));
        let path = dir.join("a/b/boot.log");
        append_boot_line(&path, "one").unwrap();
        append_boot_line(&path, "two").unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(text, "boot one\nboot two\n");
        assert!(!boot_id().is_empty());
    }

    #[test]
    fn serves_over_tcp_and_probe_agrees() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = std::thread::spawn(move || {
            for _ in 0..2 {
                let (stream, _) = listener.accept().unwrap();
                handle_connection(stream).unwrap();
            }
        });
        let mut client = TcpStream::connect(("127.0.0.1", port)).unwrap();
        client.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nAccept: */*\r\n\r\n").unwrap();
        let mut answer = String::new();
        client.read_to_string(&mut answer).unwrap();
        assert!(answer.starts_with("HTTP/1.1 200 OK\r\n"), "{answer}");
        assert!(answer.ends_with("\r\n\r\nHello Docker!!"), "{answer}");
        assert_eq!(probe(port), Ok(()));
        server.join().unwrap();
        // Nobody listens on that port any more.
        assert!(probe(port).is_err());
    }
}
