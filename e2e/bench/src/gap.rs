//! The StartFirst gap: while a tool replaces the one container of a service, does any
//! container of the service answer HTTP all the time?
//!
//! A prober thread runs rounds every [`PERIOD`]: it lists the service's running containers
//! by label (straight on the engine socket, not through the counting proxy), and sends
//! `GET /` to port 8080 of each one's bridge IP, all at once. A round *answers* when any of
//! them answers 200. The **gap** of a change is the longest stretch from the start of a round
//! that got no answer to the start of the next round that did, between the tool's spawn and
//! the first answered round after it exited: 0 when every round was answered. Its
//! resolution is the round spacing (reported): shorter outages can fall between rounds.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use bollard::Docker;
use bollard::query_parameters::ListContainersOptions;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Time between the starts of two probe rounds.
pub const PERIOD: Duration = Duration::from_millis(5);
/// How long one HTTP probe may take (connect + answer).
const PROBE_TIMEOUT: Duration = Duration::from_millis(200);

/// One probe round.
#[derive(Clone, Copy, Debug)]
pub struct Round {
    pub at: Instant,
    pub answered: bool,
}

/// A prober running on its own thread until [`Prober::finish`].
pub struct Prober {
    rounds: Arc<Mutex<Vec<Round>>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Prober {
    /// Starts probing the running containers labelled `label` (`key=value`) on the engine
    /// at `engine` (a `DOCKER_HOST` value).
    pub fn start(engine: &str, label: &str) -> anyhow::Result<Prober> {
        let docker = Docker::connect_with_host(engine).with_context(|| format!("connect to {engine}"))?;
        let rounds: Arc<Mutex<Vec<Round>>> = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let (r, s, label) = (rounds.clone(), stop.clone(), label.to_string());
        let thread = std::thread::Builder::new()
            .name("gap-prober".into())
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a prober runtime");
                rt.block_on(probe_loop(docker, label, r, s));
            })
            .context("start the prober thread")?;
        Ok(Prober { rounds, stop, thread: Some(thread) })
    }

    fn rounds(&self) -> Vec<Round> {
        self.rounds.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Waits (polling) until a round that began at or after `since` was answered.
    pub async fn answered_since(&self, since: Instant, timeout: Duration) -> anyhow::Result<Instant> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(r) = self.rounds().into_iter().find(|r| r.at >= since && r.answered) {
                return Ok(r.at);
            }
            anyhow::ensure!(Instant::now() < deadline, "no container of the service answered within {timeout:?}");
            tokio::time::sleep(PERIOD).await;
        }
    }

    /// Stops probing; returns the rounds.
    pub fn finish(mut self) -> Vec<Round> {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        self.rounds()
    }
}

impl Drop for Prober {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

async fn probe_loop(docker: Docker, label: String, rounds: Arc<Mutex<Vec<Round>>>, stop: Arc<AtomicBool>) {
    let docker = match docker.negotiate_version().await {
        Ok(d) => d,
        Err(e) => {
            eprintln!("warning: the gap prober cannot negotiate with the engine: {e}");
            return;
        }
    };
    let filters =
        HashMap::from([("label".to_string(), vec![label]), ("status".to_string(), vec!["running".to_string()])]);
    while !stop.load(Ordering::SeqCst) {
        let at = Instant::now();
        let opts = ListContainersOptions { filters: Some(filters.clone()), ..Default::default() };
        let ips: Vec<String> = match docker.list_containers(Some(opts)).await {
            Ok(list) => list
                .into_iter()
                .flat_map(|c| c.network_settings.and_then(|n| n.networks).unwrap_or_default().into_values())
                .filter_map(|n| n.ip_address.filter(|ip| !ip.is_empty()))
                .collect(),
            Err(_) => Vec::new(),
        };
        let answers = futures::future::join_all(ips.iter().map(|ip| probe(ip))).await;
        let answered = answers.into_iter().any(|a| a);
        rounds.lock().unwrap_or_else(|p| p.into_inner()).push(Round { at, answered });
        tokio::time::sleep((at + PERIOD).saturating_duration_since(Instant::now())).await;
    }
}

/// `GET /` on `ip:8080`: true on a 200 answer within [`PROBE_TIMEOUT`].
async fn probe(ip: &str) -> bool {
    let attempt = async {
        let mut s = tokio::net::TcpStream::connect((ip, 8080)).await.ok()?;
        s.write_all(b"GET / HTTP/1.0\r\n\r\n").await.ok()?;
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).await.ok()?;
        Some(buf.starts_with(b"HTTP/1.1 200") || buf.starts_with(b"HTTP/1.0 200"))
    };
    matches!(tokio::time::timeout(PROBE_TIMEOUT, attempt).await, Ok(Some(true)))
}

/// What the rounds between `from` and `to` (inclusive) say.
#[derive(Clone, Copy, Debug)]
pub struct Gap {
    /// The longest stretch without an answer (0 when every round was answered).
    pub longest: Duration,
    pub rounds: usize,
    pub unanswered: usize,
    /// Median time between two round starts: the measurement's resolution.
    pub spacing: Duration,
}

/// The gap in `rounds` between `from` and `to`.
pub fn gap(rounds: &[Round], from: Instant, to: Instant) -> Gap {
    let window: Vec<Round> = rounds.iter().copied().filter(|r| r.at >= from && r.at <= to).collect();
    let mut longest = Duration::ZERO;
    let mut outage_start: Option<Instant> = None;
    for r in &window {
        match (r.answered, outage_start) {
            (false, None) => outage_start = Some(r.at),
            (true, Some(s)) => {
                longest = longest.max(r.at - s);
                outage_start = None;
            }
            _ => {}
        }
    }
    if let (Some(s), Some(last)) = (outage_start, window.last()) {
        longest = longest.max(last.at - s);
    }
    let mut spacings: Vec<Duration> = window.windows(2).map(|w| w[1].at - w[0].at).collect();
    spacings.sort();
    Gap {
        longest,
        rounds: window.len(),
        unanswered: window.iter().filter(|r| !r.answered).count(),
        spacing: spacings.get(spacings.len() / 2).copied().unwrap_or_default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_gap_runs_from_the_first_unanswered_round_to_the_next_answer() {
        let t = Instant::now();
        let ms = Duration::from_millis;
        let answers = [true, true, false, false, false, true, false, true];
        let rounds: Vec<Round> =
            answers.iter().enumerate().map(|(i, &a)| Round { at: t + ms(5 * i as u64), answered: a }).collect();
        let g = gap(&rounds, t, t + ms(100));
        assert_eq!(g.longest, ms(15));
        assert_eq!(g.unanswered, 4);
        assert_eq!(g.spacing, ms(5));
        let all_answered: Vec<Round> = rounds.iter().map(|r| Round { answered: true, ..*r }).collect();
        assert_eq!(gap(&all_answered, t, t + ms(100)).longest, Duration::ZERO);
    }
}
