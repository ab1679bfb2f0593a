//! Where the stages' work runs: on a worker of rayon's global pool, not on `main`.
//!
//! Every fused kernel, candle's CPU ops and `gemm` split their loops with rayon. Called from a
//! thread outside the pool, each parallel loop is handed to the pool while the caller sleeps on
//! a latch, so every op of a decoding step costs two context switches: decoding the tiny
//! policy spent more time in the kernel's scheduler than in arithmetic (4.9 s of system time
//! against 2.9 s of user time for 128 greedy prompts). Run from a worker, a parallel loop starts
//! on the calling thread and the other workers only steal what they can.

/// Runs `f` on a worker thread of rayon's global pool and returns its result.
pub fn on_pool<R: Send>(f: impl FnOnce() -> R + Send) -> R {
    rayon::scope(|_| f())
}
