//! What the operator tells the outside: Prometheus metrics and the HTTP endpoints that serve
//! them with `/healthz` and `/readyz`.

pub mod http;
pub mod metrics;

pub use metrics::Metrics;
