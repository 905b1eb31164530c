//! Running async code from sync code, whatever the caller's context.
//!
//! Harness functions such as [`crate::ensure_echo_image`] and guards' `Drop` are sync but
//! talk to the engine with bollard. They may be called from a plain `#[test]` or from inside
//! a `#[tokio::test]` runtime, where `block_on` would panic; running the future on a fresh
//! current-thread runtime in a scoped thread works in both.

use std::future::Future;

/// Runs `fut` to completion on its own runtime in its own thread; a panic in it is re-raised.
pub(crate) fn block_on<F>(fut: F) -> F::Output
where
    F: Future + Send,
    F::Output: Send,
{
    try_block_on(fut).unwrap_or_else(|p| std::panic::resume_unwind(p))
}

/// [`block_on`] that returns a panic in `fut` as `Err` instead of re-raising it: safe in
/// `Drop` while the calling thread is already unwinding.
pub(crate) fn try_block_on<F>(fut: F) -> std::thread::Result<F::Output>
where
    F: Future + Send,
    F::Output: Send,
{
    std::thread::scope(|s| {
        s.spawn(|| {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a tokio runtime for the harness")
                .block_on(fut)
        })
        .join()
    })
}
