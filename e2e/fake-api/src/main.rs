//! `fake-api`: serve berth's fake Kubernetes API on an address and write a kubeconfig for it.
//!
//! ```text
//! fake-api [--listen 127.0.0.1:0] [--kubeconfig PATH]
//! ```
//!
//! Prints `listening on http://ADDR` (and `kubeconfig PATH`) on stdout once serving, then
//! serves until killed. For end-to-end scripts that run the real `berth operator` binary with
//! `KUBECONFIG=PATH`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

fn usage() -> ExitCode {
    eprintln!("usage: fake-api [--listen ADDR] [--kubeconfig PATH]\n  ADDR defaults to 127.0.0.1:0 (a free port)");
    ExitCode::from(2)
}

fn main() -> ExitCode {
    let mut listen: SocketAddr = SocketAddr::from(([127, 0, 0, 1], 0));
    let mut kubeconfig: Option<PathBuf> = None;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let (flag, inline) = match arg.split_once('=') {
            Some((f, v)) => (f.to_string(), Some(v.to_string())),
            None => (arg.clone(), None),
        };
        let mut value = || inline.clone().or_else(|| args.next());
        match flag.as_str() {
            "--listen" => match value().and_then(|v| v.parse().ok()) {
                Some(addr) => listen = addr,
                None => return usage(),
            },
            "--kubeconfig" => match value() {
                Some(path) => kubeconfig = Some(PathBuf::from(path)),
                None => return usage(),
            },
            "-h" | "--help" => {
                usage();
                return ExitCode::SUCCESS;
            }
            _ => return usage(),
        }
    }
    let api = match berth_fake_api::FakeApi::start_on(listen) {
        Ok(api) => api,
        Err(e) => {
            eprintln!("fake-api: cannot listen on {listen}: {e}");
            return ExitCode::FAILURE;
        }
    };
    if let Some(path) = &kubeconfig
        && let Err(e) = std::fs::write(path, api.kubeconfig_yaml())
    {
        eprintln!("fake-api: cannot write {}: {e}", path.display());
        return ExitCode::FAILURE;
    }
    println!("listening on {}", api.url());
    if let Some(path) = &kubeconfig {
        println!("kubeconfig {}", path.display());
    }
    loop {
        std::thread::park();
    }
}
