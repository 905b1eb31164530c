//! How long berth takes to decide "nothing to build": reading a build context of many small
//! files (`input::build_context::read_context`) and digesting it (`Context::input_digest`),
//! with the page cache cold and warm. The goal for 10,000 files is well under 0.3 s.
//!
//! `cargo run --release -p berth --example context_digest -- [FILES] [--drop-caches]`
//!
//! The context is made in a temporary folder: FILES files (default 10,000) of 64 to 575 bytes in
//! folders of 100, a Dockerfile, and a `.dockerignore` that leaves out 200 more files. "Cold"
//! evicts the context's file contents from the page cache (`posix_fadvise(DONTNEED)` on each,
//! after a `sync`); the kernel keeps its folder and inode caches. With `--drop-caches` (root)
//! it drops the whole machine's page, folder and inode caches instead: colder, and it slows
//! everything else on the machine for a moment.

use std::collections::BTreeMap;
use std::fs;
use std::os::fd::AsRawFd;
use std::path::Path;
use std::time::{Duration, Instant};

use berth::input::build_context::{Context, DockerIgnore, EntryKind, read_context};

const WARM_RUNS: usize = 5;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let drop_caches = args.iter().any(|a| a == "--drop-caches");
    let files: usize = match args.iter().find(|a| !a.starts_with("--")) {
        Some(n) => n.parse().expect("FILES is a number"),
        None => 10_000,
    };

    let dir = tempfile::Builder::new().prefix("berth-context-").tempdir().expect("a temporary folder");
    make_context(dir.path(), files);
    let ctx = decide(dir.path()).0;
    let sent = ctx.entries().iter().filter(|e| matches!(e.kind, EntryKind::File { .. })).count();
    let bytes: u64 =
        ctx.entries().iter().map(|e| if let EntryKind::File { size, .. } = e.kind { size } else { 0 }).sum();
    println!(
        "context: {} ({sent} files sent, {} entries, {:.1} MiB; 200 files ignored), {} cores",
        dir.path().display(),
        ctx.entries().len(),
        bytes as f64 / (1 << 20) as f64,
        std::thread::available_parallelism().map_or(1, |n| n.get()),
    );

    if drop_caches {
        evict_all();
    } else {
        evict(dir.path());
    }
    let (cold_ctx, cold_read, cold_digest) = decide(dir.path());
    let how = if drop_caches { "all caches dropped" } else { "file pages evicted" };
    println!("cold ({how}): {}", figures(cold_read, cold_digest));

    let mut warm: Vec<(Duration, Duration)> =
        (0..WARM_RUNS).map(|_| decide(dir.path())).map(|(_, r, d)| (r, d)).collect();
    warm.sort_by_key(|(r, d)| *r + *d);
    let (best_read, best_digest) = warm[0];
    let (median_read, median_digest) = warm[WARM_RUNS / 2];
    println!("warm, best of {WARM_RUNS}: {}", figures(best_read, best_digest));
    println!("warm, median: {}", figures(median_read, median_digest));

    let started = Instant::now();
    let tar = cold_ctx.tar(Counter(0)).expect("a tar");
    println!(
        "for comparison, the tar to nowhere (warm): {} ms, {:.1} MiB",
        ms(started.elapsed()),
        tar.0 as f64 / (1 << 20) as f64
    );
}

/// Reads the context and digests it, as `berth apply` decides whether to build.
fn decide(dir: &Path) -> (Context, Duration, Duration) {
    let started = Instant::now();
    let ignore = DockerIgnore::read(dir).expect("a .dockerignore");
    let ctx = read_context(dir, Path::new("Dockerfile"), &ignore).expect("a context");
    let read = started.elapsed();
    let started = Instant::now();
    let args = BTreeMap::from([("VERSION".to_owned(), "1.0".to_owned())]);
    let digest = ctx.input_digest(ctx.dockerfile(), &args, None, None);
    let digested = started.elapsed();
    assert!(digest.starts_with("sha256:"));
    (ctx, read, digested)
}

fn figures(read: Duration, digest: Duration) -> String {
    format!("read_context {} ms + input_digest {} ms = {} ms", ms(read), ms(digest), ms(read + digest))
}

fn ms(d: Duration) -> String {
    format!("{:.1}", d.as_secs_f64() * 1000.0)
}

fn make_context(dir: &Path, files: usize) {
    fs::write(dir.join("Dockerfile"), "FROM scratch\nCOPY src /src\n").expect("a Dockerfile");
    fs::write(dir.join(".dockerignore"), "*.log\nbuild/\n").expect("a .dockerignore");
    for i in 0..files {
        let folder = dir.join(format!("src/d{:03}", i / 100));
        if i % 100 == 0 {
            fs::create_dir_all(&folder).expect("a folder");
        }
        let content: String = format!("line of file {i}\n").chars().cycle().take(64 + (i * 7919) % 512).collect();
        fs::write(folder.join(format!("f{i:05}.txt")), content).expect("a file");
    }
    fs::create_dir_all(dir.join("build")).expect("a folder");
    for i in 0..100 {
        fs::write(dir.join(format!("build/out{i}.o")), "object").expect("a file");
        fs::write(dir.join(format!("debug{i}.log")), "log").expect("a file");
    }
}

/// Evicts the files under `dir` from the page cache.
fn evict(dir: &Path) {
    // SAFETY: sync has no preconditions; written pages must be clean to be dropped.
    unsafe { libc::sync() };
    let mut folders = vec![dir.to_path_buf()];
    while let Some(folder) = folders.pop() {
        for item in fs::read_dir(&folder).expect("a folder") {
            let path = item.expect("an entry").path();
            if path.is_dir() {
                folders.push(path);
            } else {
                let file = fs::File::open(&path).expect("a file");
                // SAFETY: a valid open descriptor; the advice only affects the cache.
                unsafe { libc::posix_fadvise(file.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
            }
        }
    }
}

/// Drops the whole machine's page, folder and inode caches (root only).
fn evict_all() {
    // SAFETY: sync has no preconditions.
    unsafe { libc::sync() };
    fs::write("/proc/sys/vm/drop_caches", "3").expect("--drop-caches needs root");
}

/// Counts what is written.
struct Counter(u64);

impl std::io::Write for Counter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0 += buf.len() as u64;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
