//! One timed run of a tool (or of the floor), with the Docker API requests it made.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use berth_tests::Request;

/// One timed run.
#[derive(Clone, Debug)]
pub struct Sample {
    /// When the run began (before the process was spawned, for a tool).
    pub started: Instant,
    /// Wall time, from spawn to exit for a tool (process start-up included).
    pub wall: Duration,
    /// Every request the counting proxy saw during the run, in arrival order.
    pub requests: Vec<Request>,
}

impl Sample {
    /// Requests per method.
    pub fn by_method(&self) -> BTreeMap<String, usize> {
        let mut m = BTreeMap::new();
        for r in &self.requests {
            *m.entry(r.method.clone()).or_insert(0) += 1;
        }
        m
    }

    /// GET and HEAD requests.
    pub fn reads(&self) -> usize {
        self.requests.iter().filter(|r| !r.is_mutating()).count()
    }

    /// Any other method.
    pub fn mutating(&self) -> usize {
        self.requests.iter().filter(|r| r.is_mutating()).count()
    }

    /// `POST /containers/create` requests: containers created.
    pub fn creates(&self) -> usize {
        self.count(|m, e| m == "POST" && e == "/containers/create")
    }

    /// `DELETE /containers/{id}` requests: containers removed.
    pub fn removes(&self) -> usize {
        self.count(|m, e| m == "DELETE" && e == "/containers/{id}")
    }

    fn count(&self, pred: impl Fn(&str, &str) -> bool) -> usize {
        self.requests.iter().filter(|r| pred(&r.method, &endpoint(r))).count()
    }

    /// The request timeline, one request a line: `+offset took METHOD endpoint`, offsets
    /// from the run's start, in milliseconds.
    pub fn timeline(&self) -> String {
        let mut out = String::from("# +ms_since_start  engine_ms  method endpoint\n");
        for r in &self.requests {
            let at = r.at.saturating_duration_since(self.started).as_secs_f64() * 1000.0;
            let took =
                r.took.map(|t| format!("{:9.1}", t.as_secs_f64() * 1000.0)).unwrap_or_else(|| "        -".into());
            out.push_str(&format!("+{at:9.1} {took}  {} {}\n", r.method, endpoint(r)));
        }
        let end = self.wall.as_secs_f64() * 1000.0;
        out.push_str(&format!("+{end:9.1}     exit\n"));
        out
    }

    /// Where the run's time went, from its requests' timeline.
    pub fn anatomy(&self) -> Anatomy {
        let end = self.started + self.wall;
        let first = self.requests.iter().map(|r| r.at).min();
        let last = self.requests.iter().filter_map(|r| r.took.map(|t| r.at + t)).max();
        let mut classes: BTreeMap<String, Vec<Duration>> = BTreeMap::new();
        for r in &self.requests {
            if let Some(t) = r.took {
                classes.entry(format!("{} {}", r.method, endpoint(r))).or_default().push(t);
            }
        }
        Anatomy {
            before_first_request: first.map(|f| f.saturating_duration_since(self.started)),
            api_span: first.zip(last).map(|(f, l)| l.saturating_duration_since(f)),
            after_last_answer: last.map(|l| end.saturating_duration_since(l)),
            max_in_flight: max_in_flight(&self.requests),
            classes: classes
                .into_iter()
                .map(|(name, mut took)| {
                    took.sort();
                    let total = took.iter().sum();
                    EndpointTime { name, count: took.len(), median: took[took.len() / 2], total }
                })
                .collect(),
        }
    }
}

/// The timeline of one run, summarised.
#[derive(Clone, Debug)]
pub struct Anatomy {
    /// From spawn to the first request (process start-up, reading input, connecting).
    pub before_first_request: Option<Duration>,
    /// From the first request to the last answer.
    pub api_span: Option<Duration>,
    /// From the last answer to the process's exit.
    pub after_last_answer: Option<Duration>,
    /// The most requests waiting for the engine at one time.
    pub max_in_flight: usize,
    /// Per `METHOD endpoint`: how many, and how long the engine took for them.
    pub classes: Vec<EndpointTime>,
}

/// How long one kind of request took.
#[derive(Clone, Debug)]
pub struct EndpointTime {
    pub name: String,
    pub count: usize,
    pub median: Duration,
    pub total: Duration,
}

fn max_in_flight(requests: &[Request]) -> usize {
    let mut edges: Vec<(Instant, i32)> = Vec::new();
    for r in requests {
        if let Some(t) = r.took {
            edges.push((r.at, 1));
            edges.push((r.at + t, -1));
        }
    }
    // At equal instants, count an answer before a new request.
    edges.sort_by_key(|&(t, d)| (t, d));
    let (mut now, mut max) = (0i32, 0i32);
    for (_, d) in edges {
        now += d;
        max = max.max(now);
    }
    max as usize
}

/// A request's endpoint with ids and names replaced by placeholders:
/// `/v1.41/containers/3f2a…/start` -> `/containers/{id}/start`.
pub fn endpoint(r: &Request) -> String {
    let path = r.endpoint();
    let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    match segs.as_slice() {
        ["containers", "json" | "create" | "prune"] => path.to_string(),
        ["containers", _, rest @ ..] => join("/containers/{id}", rest),
        ["volumes", "create" | "prune"] => path.to_string(),
        ["volumes", _] => "/volumes/{name}".to_string(),
        ["networks", "create" | "prune"] => path.to_string(),
        ["networks", _, rest @ ..] => join("/networks/{id}", rest),
        ["exec", _, rest @ ..] => join("/exec/{id}", rest),
        ["images", "json" | "create" | "load" | "search" | "prune"] => path.to_string(),
        ["images", .., last] if segs.len() > 2 => format!("/images/{{name}}/{last}"),
        _ => path.to_string(),
    }
}

fn join(head: &str, rest: &[&str]) -> String {
    let mut s = head.to_string();
    for part in rest {
        s.push('/');
        s.push_str(part);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(method: &str, path: &str, at: Instant, took_ms: u64) -> Request {
        Request {
            method: method.into(),
            path: path.into(),
            query: None,
            at,
            took: Some(Duration::from_millis(took_ms)),
            seq: 0,
        }
    }

    #[test]
    fn endpoints_hide_ids_and_names() {
        let t = Instant::now();
        let cases = [
            ("/v1.41/containers/json", "/containers/json"),
            ("/v1.41/containers/abc123/start", "/containers/{id}/start"),
            ("/containers/abc123", "/containers/{id}"),
            ("/v1.41/images/example/echo:latest/json", "/images/{name}/json"),
            ("/v1.41/volumes/berth-history.x", "/volumes/{name}"),
            ("/version", "/version"),
        ];
        for (path, want) in cases {
            assert_eq!(endpoint(&req("GET", path, t, 1)), want, "{path}");
        }
    }

    #[test]
    fn in_flight_counts_overlaps() {
        let t = Instant::now();
        let ms = Duration::from_millis;
        let rs = [req("GET", "/a", t, 10), req("GET", "/b", t + ms(5), 10), req("GET", "/c", t + ms(10), 1)];
        assert_eq!(max_in_flight(&rs), 2);
    }
}
