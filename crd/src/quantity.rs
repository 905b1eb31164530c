//! Kubernetes-style quantities (`500m`, `1.5`, `256Mi`) and durations (`5s`, `500ms`),
//! parsed to the integers the Docker API takes.
//!
//! The syntax of CPUs and memory is [`crate::patterns::CPUS`] and [`crate::patterns::MEMORY`],
//! the same patterns the CRD schema declares; the ranges are checked here only.

use crate::patterns::{CPUS, MEMORY, is_match};
use crate::validate::quoted;

/// CPUs as Docker's `NanoCpus`: `"1.5"` → 1_500_000_000, `"500m"` → 500_000_000.
pub fn parse_cpus(s: &str) -> Result<i64, String> {
    if !is_match(CPUS, s) {
        return Err(format!("{} is not a CPU quantity (examples: \"500m\", \"1.5\")", quoted(s)));
    }
    let (num, scale) = match s.strip_suffix('m') {
        Some(n) => (n, 1_000_000.0),
        None => (s, 1_000_000_000.0),
    };
    let v: f64 =
        num.parse().map_err(|_| format!("{} is not a CPU quantity (examples: \"500m\", \"1.5\")", quoted(s)))?;
    if !v.is_finite() || v <= 0.0 {
        return Err(format!("{} must be a positive CPU quantity", quoted(s)));
    }
    let nanos = (v * scale).round();
    if !(1_000_000.0..=1e15).contains(&nanos) {
        return Err(format!("{} is out of range (1m to 1000000 CPUs)", quoted(s)));
    }
    Ok(nanos as i64)
}

/// Memory in bytes: `"256Mi"`, `"1G"`, `"1048576"`.
pub fn parse_memory(s: &str) -> Result<i64, String> {
    if !is_match(MEMORY, s) {
        return Err(format!("{} is not a memory quantity (examples: \"256Mi\", \"1Gi\")", quoted(s)));
    }
    const SUFFIXES: [(&str, f64); 10] = [
        ("Ki", 1024.0),
        ("Mi", 1048576.0),
        ("Gi", 1073741824.0),
        ("Ti", 1099511627776.0),
        ("k", 1e3),
        ("K", 1e3),
        ("M", 1e6),
        ("G", 1e9),
        ("T", 1e12),
        ("", 1.0),
    ];
    let (num, mult) = SUFFIXES
        .iter()
        .find_map(|(suf, m)| s.strip_suffix(suf).map(|n| (n, *m)))
        .expect("the empty suffix always matches");
    let v: f64 =
        num.parse().map_err(|_| format!("{} is not a memory quantity (examples: \"256Mi\", \"1Gi\")", quoted(s)))?;
    let bytes = (v * mult).round();
    // Docker refuses limits under 6 MiB; say so here rather than at container create.
    if !bytes.is_finite() || bytes < 6.0 * 1048576.0 {
        return Err(format!("{} is below Docker's minimum memory limit of 6Mi", quoted(s)));
    }
    if bytes > 9.0e18 {
        return Err(format!("{} is out of range", quoted(s)));
    }
    Ok(bytes as i64)
}

/// A size in bytes (`shmSize`, a tmpfs mount's `size`): the syntax of memory, `"64Mi"`, `"1G"`,
/// `"1048576"`, more than zero (a size of zero means the engine's default; leave it out).
pub fn parse_size(s: &str) -> Result<i64, String> {
    if !is_match(MEMORY, s) {
        return Err(format!("{} is not a size (examples: \"64Mi\", \"1Gi\")", quoted(s)));
    }
    let (num, mult) = SIZE_SUFFIXES
        .iter()
        .find_map(|(suf, m)| s.strip_suffix(suf).map(|n| (n, *m)))
        .expect("the empty suffix always matches");
    let v: f64 = num.parse().map_err(|_| format!("{} is not a size (examples: \"64Mi\", \"1Gi\")", quoted(s)))?;
    let bytes = (v * mult).round();
    if !bytes.is_finite() || bytes < 1.0 {
        return Err(format!("{} must be more than 0 (leave the field out for the engine's default)", quoted(s)));
    }
    if bytes > 9.0e18 {
        return Err(format!("{} is out of range", quoted(s)));
    }
    Ok(bytes as i64)
}

/// The unit suffixes of [`MEMORY`], longest first.
const SIZE_SUFFIXES: [(&str, f64); 10] = [
    ("Ki", 1024.0),
    ("Mi", 1048576.0),
    ("Gi", 1073741824.0),
    ("Ti", 1099511627776.0),
    ("k", 1e3),
    ("K", 1e3),
    ("M", 1e6),
    ("G", 1e9),
    ("T", 1e12),
    ("", 1.0),
];

/// A duration in nanoseconds: `"5s"`, `"500ms"`, `"1m30s"`.
pub fn parse_duration(s: &str) -> Result<i64, String> {
    let d = humantime::parse_duration(s.trim())
        .map_err(|e| format!("{} is not a duration (examples: \"5s\", \"500ms\"): {e}", quoted(s)))?;
    i64::try_from(d.as_nanos()).map_err(|_| format!("{} is too long", quoted(s)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpus() {
        assert_eq!(parse_cpus("500m"), Ok(500_000_000));
        assert_eq!(parse_cpus("1.5"), Ok(1_500_000_000));
        assert_eq!(parse_cpus("2"), Ok(2_000_000_000));
        assert!(parse_cpus("-1").is_err());
        assert!(parse_cpus("lots").is_err());
        assert!(parse_cpus("0").is_err());
        assert!(parse_cpus(" 1").is_err(), "the syntax is the CRD's pattern: no spaces");
        assert!(parse_cpus("1e3").is_err());
    }

    #[test]
    fn memory() {
        assert_eq!(parse_memory("256Mi"), Ok(256 * 1024 * 1024));
        assert_eq!(parse_memory("1G"), Ok(1_000_000_000));
        assert_eq!(parse_memory("8388608"), Ok(8388608));
        assert!(parse_memory("1Ki").is_err(), "below Docker's minimum");
        assert!(parse_memory("12XB").is_err());
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("64Mi"), Ok(64 * 1024 * 1024));
        assert_eq!(parse_size("1"), Ok(1), "no minimum but zero");
        assert_eq!(parse_size("1.5Ki"), Ok(1536));
        assert!(parse_size("0").is_err());
        assert!(parse_size("0Mi").is_err());
        assert!(parse_size("0.1").is_err(), "rounds to zero bytes");
        assert!(parse_size("-1Mi").is_err());
        assert!(parse_size("64MB").is_err());
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("500ms"), Ok(500_000_000));
        assert_eq!(parse_duration("2s"), Ok(2_000_000_000));
        assert!(parse_duration("soon").is_err());
    }
}
