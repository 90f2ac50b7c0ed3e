//! A runtime an IO boundary owns, so the pass stays synchronous.
//!
//! The s3 source and the Kubernetes target speak async clients; the pass
//! calls them as plain functions. Each owns a current-thread tokio runtime
//! and blocks on it: the same from `run --once` (no runtime at all) and from
//! the daemon's `block_in_place`. Called from inside another runtime's
//! context, where a runtime cannot be entered, the future runs on a scoped
//! thread instead. Dropped with `shutdown_background`, never blocking a
//! runtime.

use std::future::Future;

/// An owned current-thread runtime.
#[derive(Debug)]
pub struct Runtime(Option<tokio::runtime::Runtime>);

impl Runtime {
    /// A current-thread runtime with IO and timers.
    pub fn new() -> std::io::Result<Runtime> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        Ok(Runtime(Some(runtime)))
    }

    /// Runs `future` to completion.
    pub fn block_on<F>(&self, future: F) -> F::Output
    where
        F: Future + Send,
        F::Output: Send,
    {
        let runtime = self.0.as_ref().expect("the runtime lives until drop");
        if tokio::runtime::Handle::try_current().is_ok() {
            std::thread::scope(|s| {
                s.spawn(|| runtime.block_on(future))
                    .join()
                    .expect("a blocking call does not panic")
            })
        } else {
            runtime.block_on(future)
        }
    }
}

impl Drop for Runtime {
    fn drop(&mut self) {
        if let Some(runtime) = self.0.take() {
            runtime.shutdown_background();
        }
    }
}
