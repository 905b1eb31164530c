//! What the operator tells the outside: Prometheus metrics and the HTTP endpoints that serve
//! them with `/healthz` and `/readyz`; and what every berth command logs ([`logs`]).

pub mod http;
pub mod logs;
pub mod metrics;

pub use metrics::Metrics;
