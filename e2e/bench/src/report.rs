//! The markdown report: the main table, the issue-5 targets, the StartFirst gap, and where
//! each tool's time went.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use crate::gap::Gap;
use crate::sample::Sample;

/// What a row measures.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Scenario {
    Converge,
    Noop,
    ChangeOne,
    Delete,
}

impl Scenario {
    pub const ALL: [Scenario; 4] = [Scenario::Converge, Scenario::Noop, Scenario::ChangeOne, Scenario::Delete];

    /// A file-name word: `converge`, `noop`, `change-one`, `delete`.
    pub fn slug(self) -> &'static str {
        match self {
            Scenario::Converge => "converge",
            Scenario::Noop => "noop",
            Scenario::ChangeOne => "change-one",
            Scenario::Delete => "delete",
        }
    }

    fn label(self) -> &'static str {
        match self {
            Scenario::Converge => "converge from nothing",
            Scenario::Noop => "no-op (nothing changed)",
            Scenario::ChangeOne => "change one env value",
            Scenario::Delete => "delete all",
        }
    }

    /// The floor a tool is held against: the parallel one where there is one.
    fn floor(self) -> Who {
        match self {
            Scenario::Converge | Scenario::Delete => Who::FloorParallel,
            Scenario::Noop | Scenario::ChangeOne => Who::Floor,
        }
    }
}

/// Who did the work.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Who {
    Berth,
    Compose,
    /// Direct API calls, one after the other (or the one call there is).
    Floor,
    /// Direct API calls, [`crate::floor::PARALLEL`] at a time.
    FloorParallel,
}

impl From<crate::tools::Tool> for Who {
    fn from(t: crate::tools::Tool) -> Who {
        match t {
            crate::tools::Tool::Berth => Who::Berth,
            crate::tools::Tool::Compose => Who::Compose,
        }
    }
}

/// Everything measured in one run.
#[derive(Default)]
pub struct Results {
    pub samples: BTreeMap<(usize, Scenario, Who), Vec<Sample>>,
    /// Per tool (`berth`, `docker-compose`), one gap per change.
    pub gaps: BTreeMap<&'static str, Vec<(Gap, Duration)>>,
}

impl Results {
    pub fn add(&mut self, n: usize, scenario: Scenario, who: Who, sample: Sample) {
        self.samples.entry((n, scenario, who)).or_default().push(sample);
    }

    pub fn get(&self, n: usize, s: Scenario, w: Who) -> &[Sample] {
        self.samples.get(&(n, s, w)).map(Vec::as_slice).unwrap_or(&[])
    }

    pub fn sizes(&self) -> Vec<usize> {
        let mut v: Vec<usize> = self.samples.keys().map(|k| k.0).collect();
        v.dedup();
        v
    }
}

/// Median, min and max of the wall times.
#[derive(Clone, Copy)]
struct Spread {
    median: Duration,
    min: Duration,
    max: Duration,
}

fn spread(samples: &[Sample]) -> Option<Spread> {
    let mut walls: Vec<Duration> = samples.iter().map(|s| s.wall).collect();
    walls.sort();
    Some(Spread { median: median_of_sorted(&walls)?, min: *walls.first()?, max: *walls.last()? })
}

fn median_of_sorted(v: &[Duration]) -> Option<Duration> {
    match v.len() {
        0 => None,
        n if n % 2 == 1 => Some(v[n / 2]),
        n => Some((v[n / 2 - 1] + v[n / 2]) / 2),
    }
}

fn median_usize(mut v: Vec<usize>) -> usize {
    v.sort();
    v.get(v.len() / 2).copied().unwrap_or(0)
}

/// `4.1 ms`, `123 ms`, `1.23 s`.
pub fn fmt_duration(d: Duration) -> String {
    let ms = d.as_secs_f64() * 1000.0;
    if ms < 10.0 {
        format!("{ms:.1} ms")
    } else if ms < 1000.0 {
        format!("{ms:.0} ms")
    } else {
        format!("{:.2} s", ms / 1000.0)
    }
}

fn fmt_spread(s: Option<Spread>) -> String {
    match s {
        Some(s) => format!("{} ({}–{})", fmt_duration(s.median), fmt_duration(s.min), fmt_duration(s.max)),
        None => "—".into(),
    }
}

fn ratio(a: Option<Spread>, b: Option<Spread>) -> Option<f64> {
    let (a, b) = (a?.median.as_secs_f64(), b?.median.as_secs_f64());
    (b > 0.0).then(|| a / b)
}

fn fmt_ratio(r: Option<f64>) -> String {
    match r {
        Some(r) if r < 0.1 => format!("{r:.3}×"),
        Some(r) => format!("{r:.2}×"),
        None => "—".into(),
    }
}

/// `157: GET 146, POST 9, DELETE 2 (11 mutating)`: medians over the rounds, per method.
fn fmt_requests(samples: &[Sample]) -> String {
    if samples.is_empty() {
        return "—".into();
    }
    let mut methods: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    for s in samples {
        for m in s.by_method().keys() {
            methods.entry(m.clone()).or_default();
        }
    }
    for s in samples {
        let by = s.by_method();
        for (m, counts) in methods.iter_mut() {
            counts.push(by.get(m).copied().unwrap_or(0));
        }
    }
    // GET first, then the mutating methods.
    let mut parts: Vec<(String, usize)> = methods.into_iter().map(|(m, c)| (m, median_usize(c))).collect();
    parts.sort_by_key(|(m, _)| (m != "GET", m.clone()));
    let totals: Vec<usize> = samples.iter().map(|s| s.requests.len()).collect();
    let (lo, hi) = (totals.iter().min().copied().unwrap_or(0), totals.iter().max().copied().unwrap_or(0));
    let total = median_usize(totals);
    let mutating = median_usize(samples.iter().map(Sample::mutating).collect());
    let list: Vec<String> = parts.iter().map(|(m, c)| format!("{m} {c}")).collect();
    let varies = if lo != hi { format!(", {lo}–{hi} over rounds") } else { String::new() };
    format!("{total}: {} ({mutating} mutating{varies})", list.join(", "))
}

/// The whole report, in markdown.
pub fn markdown(results: &Results, rounds: usize, seq_floor_rounds: usize, machine: &str, took: Duration) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "## berth vs docker-compose vs the engine floor\n");
    let _ = writeln!(
        out,
        "Median (min–max) wall time over {rounds} rounds (the sequential floor of converge and delete: the first {} of them); requests are Docker API requests counted by a proxy in front of the engine socket (median per round). \"floor\" is direct API calls with the same create options; berth/floor is against the 4-parallel floor for converge and delete.\n",
        seq_floor_rounds.min(rounds)
    );
    let _ = writeln!(
        out,
        "| scenario | N | berth | docker-compose | floor (sequential) | floor (4 parallel) | berth/compose | berth/floor | berth requests | compose requests |"
    );
    let _ = writeln!(out, "|---|---|---|---|---|---|---|---|---|---|");
    for n in results.sizes() {
        for s in Scenario::ALL {
            let b = spread(results.get(n, s, Who::Berth));
            let c = spread(results.get(n, s, Who::Compose));
            let f = spread(results.get(n, s, Who::Floor));
            let fp = spread(results.get(n, s, Who::FloorParallel));
            let floor = spread(results.get(n, s, s.floor()));
            let _ = writeln!(
                out,
                "| {} | {n} | {} | {} | {} | {} | {} | {} | {} | {} |",
                s.label(),
                fmt_spread(b),
                fmt_spread(c),
                fmt_spread(f),
                fmt_spread(fp),
                fmt_ratio(ratio(b, c)),
                fmt_ratio(ratio(b, floor)),
                fmt_requests(results.get(n, s, Who::Berth)),
                fmt_requests(results.get(n, s, Who::Compose)),
            );
        }
    }
    out.push('\n');
    targets(&mut out, results);
    gaps(&mut out, results);
    anatomy(&mut out, results);
    let _ = writeln!(out, "## Machine\n\n{machine}- benchmark wall time: {}\n", fmt_duration(took));
    out
}

fn met(ok: bool) -> &'static str {
    if ok { "**met**" } else { "**missed**" }
}

fn targets(out: &mut String, results: &Results) {
    let _ = writeln!(out, "## Issue 5 targets\n\n| N | target | berth | verdict |\n|---|---|---|---|");
    for n in results.sizes() {
        let b = |s| spread(results.get(n, s, Who::Berth));
        let c = |s| spread(results.get(n, s, Who::Compose));
        let f = |s: Scenario| spread(results.get(n, s, s.floor()));

        let noop = results.get(n, Scenario::Noop, Who::Berth);
        if let Some(r) = ratio(c(Scenario::Noop), b(Scenario::Noop)) {
            let _ = writeln!(out, "| {n} | no-op ≥ 20× faster than compose | {r:.1}× faster | {} |", met(r >= 20.0));
        }
        if !noop.is_empty() {
            let reads: Vec<usize> = noop.iter().map(Sample::reads).collect();
            let muts: Vec<usize> = noop.iter().map(Sample::mutating).collect();
            let ok = reads.iter().all(|&r| r == 1) && muts.iter().all(|&m| m == 0);
            let _ = writeln!(
                out,
                "| {n} | no-op: exactly 1 read request, 0 mutating | reads {}, mutating {} (per round) | {} |",
                list(&reads),
                list(&muts),
                met(ok)
            );
        }
        if let Some(r) = ratio(b(Scenario::Converge), f(Scenario::Converge)) {
            let _ = writeln!(out, "| {n} | converge ≤ 1.1× the 4-parallel floor | {r:.2}× | {} |", met(r <= 1.1));
        }
        if let Some(r) = ratio(b(Scenario::Converge), c(Scenario::Converge)) {
            let _ = writeln!(out, "| {n} | converge faster than compose | {r:.2}× compose's time | {} |", met(r < 1.0));
        }
        let change = results.get(n, Scenario::ChangeOne, Who::Berth);
        if !change.is_empty() {
            let created: Vec<usize> = change.iter().map(Sample::creates).collect();
            let removed: Vec<usize> = change.iter().map(Sample::removes).collect();
            let ok = created.iter().all(|&c| c == 1) && removed.iter().all(|&r| r == 1);
            let compose = results.get(n, Scenario::ChangeOne, Who::Compose);
            let _ = writeln!(
                out,
                "| {n} | change one: exactly one container replaced | created {}, removed {} (compose: created {}, removed {}) | {} |",
                list(&created),
                list(&removed),
                list(&compose.iter().map(Sample::creates).collect::<Vec<_>>()),
                list(&compose.iter().map(Sample::removes).collect::<Vec<_>>()),
                met(ok)
            );
        }
        if let Some(r) = ratio(b(Scenario::ChangeOne), f(Scenario::ChangeOne)) {
            let _ = writeln!(out, "| {n} | change one ≤ 1.2× the floor | {r:.2}× | {} |", met(r <= 1.2));
        }
    }
    if let Some(g) = results.gaps.get("berth").filter(|g| !g.is_empty()) {
        let worst = g.iter().map(|(g, _)| g.longest).max().unwrap_or_default();
        let _ = writeln!(
            out,
            "| 1 | StartFirst: no window without an answer (gap 0 ms) | longest gap {} over {} changes | {} |",
            fmt_duration(worst),
            g.len(),
            met(worst.is_zero())
        );
    }
    out.push('\n');
}

/// `1` when all equal, else `1, 2, 1`.
fn list(v: &[usize]) -> String {
    if v.windows(2).all(|w| w[0] == w[1]) {
        v.first().map(|x| format!("{x} in every round")).unwrap_or_default()
    } else {
        v.iter().map(usize::to_string).collect::<Vec<_>>().join(", ")
    }
}

fn gaps(out: &mut String, results: &Results) {
    if results.gaps.is_empty() {
        return;
    }
    let _ = writeln!(
        out,
        "## StartFirst gap (one replica with a healthcheck, one env change per round)\n\n\
         The gap is the longest stretch during a change in which no container of the service answered `GET /` \
         (probe rounds every {}; see e2e/bench/src/gap.rs). berth runs `strategy: StartFirst` (the new container is \
         healthy before the old one stops); docker-compose recreates (stops the old container, then starts the new one).\n",
        fmt_duration(crate::gap::PERIOD)
    );
    let _ = writeln!(
        out,
        "| tool | changes | gap median | gap max | unanswered rounds (all changes) | probe rounds | round spacing (median) | change wall time median |"
    );
    let _ = writeln!(out, "|---|---|---|---|---|---|---|---|");
    for (tool, g) in &results.gaps {
        let mut longest: Vec<Duration> = g.iter().map(|(g, _)| g.longest).collect();
        longest.sort();
        let mut walls: Vec<Duration> = g.iter().map(|(_, w)| *w).collect();
        walls.sort();
        let mut spacing: Vec<Duration> = g.iter().map(|(g, _)| g.spacing).collect();
        spacing.sort();
        let _ = writeln!(
            out,
            "| {tool} | {} | {} | {} | {} | {} | {} | {} |",
            g.len(),
            median_of_sorted(&longest).map(fmt_duration).unwrap_or_default(),
            longest.last().copied().map(fmt_duration).unwrap_or_default(),
            g.iter().map(|(g, _)| g.unanswered).sum::<usize>(),
            g.iter().map(|(g, _)| g.rounds).sum::<usize>(),
            median_of_sorted(&spacing).map(fmt_duration).unwrap_or_default(),
            median_of_sorted(&walls).map(fmt_duration).unwrap_or_default(),
        );
    }
    out.push('\n');
}

fn anatomy(out: &mut String, results: &Results) {
    let _ = writeln!(
        out,
        "## Where the time goes (last round, from the proxy's request timeline)\n\n\
         start-up: spawn to first request; API: first request to last answer; exit: last answer to exit; \
         in flight: most requests waiting for the engine at once; Σ engine: the summed time the engine took per kind \
         of request (the four largest).\n"
    );
    let _ =
        writeln!(out, "| scenario | N | tool | wall | start-up | API | exit | in flight | Σ engine, largest first |");
    let _ = writeln!(out, "|---|---|---|---|---|---|---|---|---|");
    let opt = |d: Option<Duration>| d.map(fmt_duration).unwrap_or_else(|| "—".into());
    for n in results.sizes() {
        for s in Scenario::ALL {
            for (who, name) in [(Who::Berth, "berth"), (Who::Compose, "compose")] {
                let Some(last) = results.get(n, s, who).last() else { continue };
                let a = last.anatomy();
                let mut classes = a.classes.clone();
                classes.sort_by_key(|c| std::cmp::Reverse(c.total));
                let top: Vec<String> = classes
                    .iter()
                    .take(4)
                    .map(|c| {
                        format!("{} ×{} Σ{} (med {})", c.name, c.count, fmt_duration(c.total), fmt_duration(c.median))
                    })
                    .collect();
                let _ = writeln!(
                    out,
                    "| {} | {n} | {name} | {} | {} | {} | {} | {} | {} |",
                    s.label(),
                    fmt_duration(last.wall),
                    opt(a.before_first_request),
                    opt(a.api_span),
                    opt(a.after_last_answer),
                    a.max_in_flight,
                    top.join("; ")
                );
            }
        }
    }
    out.push('\n');
}
