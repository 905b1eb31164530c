//! A fuzzer for the stable toolchain and no coverage: mutates the seed files (the invalid
//! corpus, the examples, `fuzz/seeds`, earlier crashes) and rehearses each result (`berth::rehearsal`),
//! catching panics. It complements `fuzz/` (libFuzzer, coverage-guided), which needs a long
//! instrumented build; this one builds in seconds from the workspace and runs with overflow
//! checks on (debug build).
//!
//! Inputs that validate are kept as new seeds: they are the ones that reach the planner and
//! the simulated host, where the laws are checked.
//!
//! `cargo run -p berth --example mutation_fuzz -- [SECONDS] [SEED]`. A panic writes the input
//! to `fuzz/artifacts/mutation/`, prints it, and the run exits 1.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use berth::rehearsal::rehearse;

/// Larger seeds would only slow every mutation; the large corpus files test size limits, which
/// mutation does not improve on.
const MAX_SEED_BYTES: u64 = 16 * 1024;
/// Valid inputs kept as seeds, at most.
const MAX_POOL: usize = 4096;
/// Above this, a rehearsal is reported as slow.
const SLOW: Duration = Duration::from_secs(2);

/// xorshift64*: deterministic from the seed, so a run replays.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        if n == 0 { 0 } else { (self.next() % n as u64) as usize }
    }
}

/// Values that sit on the edges of the types and ranges berth checks.
const NUMBERS: [&str; 16] = [
    "0",
    "-1",
    "1",
    "65535",
    "65536",
    "1000",
    "1001",
    "2147483647",
    "2147483648",
    "-2147483649",
    "9223372036854775807",
    "18446744073709551616",
    "1e400",
    ".nan",
    "0x1F",
    "1_000",
];

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let seconds: u64 = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(60);
    let seed: u64 = args.get(2).and_then(|s| s.parse().ok()).unwrap_or_else(|| {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(1)
    }) | 1;
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut pool = seeds(&root);
    let dictionary = dictionary(&root.join("fuzz/berth.dict"));
    assert!(!pool.is_empty(), "no seed files under {}", root.display());
    println!("mutation_fuzz: {} seeds, {} dictionary tokens, {seconds}s, seed {seed}", pool.len(), dictionary.len());

    // Panics are caught and reported here, not printed by the default hook for every one.
    std::panic::set_hook(Box::new(|_| {}));
    let mut rng = Rng(seed);
    let started = Instant::now();
    let (mut execs, mut valid, mut slow) = (0u64, 0u64, 0u64);
    let mut last_report = Instant::now();
    while started.elapsed() < Duration::from_secs(seconds) {
        let mut input = pool[rng.below(pool.len())].clone();
        let other = pool[rng.below(pool.len())].clone();
        for _ in 0..1 + rng.below(6) {
            mutate(&mut input, &other, &dictionary, &mut rng);
        }
        let t = Instant::now();
        let result = std::panic::catch_unwind(|| rehearse(Path::new("fuzz.yaml"), &input));
        execs += 1;
        if t.elapsed() > SLOW {
            slow += 1;
            save(&root, "slow", &input);
        }
        match result {
            Ok(r) if r.errors.is_empty() => {
                valid += 1;
                if pool.len() < MAX_POOL {
                    pool.push(input);
                }
            }
            Ok(_) => {}
            Err(panic) => {
                let message = panic
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_default();
                let path = save(&root, "crash", &input);
                println!("CRASH after {execs} execs: {message}\ninput saved to {}", path.display());
                println!("{}", String::from_utf8_lossy(&input));
                std::process::exit(1);
            }
        }
        if last_report.elapsed() > Duration::from_secs(30) {
            last_report = Instant::now();
            println!(
                "{:>5.0?}: {execs} execs ({:.0}/s), {valid} valid, {} seeds, {slow} slow",
                started.elapsed(),
                execs as f64 / started.elapsed().as_secs_f64(),
                pool.len()
            );
        }
    }
    println!(
        "Done {execs} runs in {:.0?}: no crash; {valid} valid inputs planned and converged, {slow} slow (> {SLOW:?})",
        started.elapsed()
    );
}

fn seeds(root: &Path) -> Vec<Vec<u8>> {
    let mut files = Vec::new();
    for dir in ["tests/data/invalid", "examples", "fuzz/seeds", "fuzz/regressions"] {
        collect(&root.join(dir), &mut files);
    }
    files.sort();
    files
        .iter()
        .filter(|f| std::fs::metadata(f).is_ok_and(|m| m.len() <= MAX_SEED_BYTES))
        .filter_map(|f| std::fs::read(f).ok())
        .map(|b| {
            let text = String::from_utf8_lossy(&b).replace("{ns}", "fuzz").replace("{endpoint}", "unix:///fuzz.sock");
            if std::str::from_utf8(&b).is_ok() { text.into_bytes() } else { b }
        })
        .collect()
}

fn collect(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            collect(&p, out);
        } else if p.extension().is_some_and(|x| x == "yaml" || x == "yml") {
            out.push(p);
        }
    }
}

/// The quoted tokens of a libFuzzer dictionary (`"..."` per line, `\xNN` escapes).
fn dictionary(path: &Path) -> Vec<Vec<u8>> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines()
        .filter_map(|l| l.trim().strip_prefix('"').and_then(|l| l.strip_suffix('"')))
        .map(|t| t.replace("\\x0a", "\n").replace("\\\"", "\"").into_bytes())
        .collect()
}

fn mutate(input: &mut Vec<u8>, other: &[u8], dictionary: &[Vec<u8>], rng: &mut Rng) {
    let at = rng.below(input.len() + 1);
    match rng.below(9) {
        0 if !input.is_empty() => {
            let i = rng.below(input.len());
            input[i] ^= 1 << rng.below(8);
        }
        1 if !input.is_empty() => {
            let end = (at + 1 + rng.below(16)).min(input.len());
            input.drain(at.min(end)..end);
        }
        2 if !dictionary.is_empty() => {
            let token = &dictionary[rng.below(dictionary.len())];
            input.splice(at..at, token.iter().copied());
        }
        3 => {
            // A number where a number (or anything) was.
            let n = NUMBERS[rng.below(NUMBERS.len())].as_bytes();
            let end = input[at..].iter().position(|b| !b.is_ascii_alphanumeric()).map_or(input.len(), |p| at + p);
            input.splice(at..end, n.iter().copied());
        }
        4 | 5 => {
            // Lines: duplicate, drop, or take one from another input, keeping YAML's shape.
            let mut lines: Vec<Vec<u8>> = input.split(|b| *b == b'\n').map(<[u8]>::to_vec).collect();
            let i = rng.below(lines.len());
            match rng.below(3) {
                0 => lines.insert(i, lines[i].clone()),
                1 if lines.len() > 1 => {
                    lines.remove(i);
                }
                _ => {
                    let theirs: Vec<&[u8]> = other.split(|b| *b == b'\n').collect();
                    lines.insert(i, theirs[rng.below(theirs.len())].to_vec());
                }
            }
            *input = lines.join(&b'\n');
        }
        6 => {
            // Indentation: shift a line, which moves a key to another mapping.
            let start = input[..at].iter().rposition(|b| *b == b'\n').map_or(0, |p| p + 1);
            if rng.below(2) == 0 {
                input.splice(start..start, *b"  ");
            } else if input[start..].starts_with(b"  ") {
                input.drain(start..start + 2);
            }
        }
        7 => {
            // Another document appended or a whole input spliced in.
            input.extend_from_slice(b"\n---\n");
            input.extend_from_slice(other);
        }
        _ => {
            // A random byte, sometimes one that is not UTF-8.
            let b = if rng.below(4) == 0 { 0x80 + rng.below(128) as u8 } else { 0x20 + rng.below(95) as u8 };
            input.insert(at, b);
        }
    }
}

/// Writes `input` under `fuzz/artifacts/mutation/` and returns the path.
fn save(root: &Path, kind: &str, input: &[u8]) -> PathBuf {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    input.hash(&mut h);
    let dir = root.join("fuzz/artifacts/mutation");
    let _ = std::fs::create_dir_all(&dir);
    let path = dir.join(format!("{kind}-{:016x}.yaml", h.finish()));
    let _ = std::fs::write(&path, input);
    path
}
