//! Reading the operator's `/metrics`, for tests that wait on what it did rather than on time.

use crate::wait::http_request;

/// The value of the first sample whose line starts with `prefix` (the metric's name and
/// labels, e.g. `berth_reconciles_total{kind="containerset"}`), `None` when the endpoint does
/// not answer or has no such sample yet.
pub fn metric_value(port: u16, prefix: &str) -> Option<f64> {
    let (_, body) = http_request(&format!("127.0.0.1:{port}"), "GET", "/metrics", &[])?;
    body.lines()
        .filter(|l| l.starts_with(prefix))
        .find_map(|l| l.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()))
}

/// How many ContainerSet reconciles the operator on `port` has finished.
pub fn set_reconciles(port: u16) -> Option<f64> {
    metric_value(port, "berth_reconciles_total{kind=\"containerset\"}")
}
