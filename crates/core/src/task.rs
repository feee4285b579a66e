//! Tasks owned by the value that spawned them.
//!
//! Invariant: a task kafkit spawns for a consumer (a fetcher, a commit, the engine behind a stream)
//! never outlives its owner. Dropping the [`OwnedTask`] aborts the task at its next await, so a
//! dropped consumer holds no connection, group membership or request open in the background.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::task::{JoinError, JoinHandle};

/// A spawned task that is aborted when this handle is dropped; await it for the task's output.
#[derive(Debug)]
pub(crate) struct OwnedTask<T> {
    handle: JoinHandle<T>,
}

impl<T: Send + 'static> OwnedTask<T> {
    /// Spawns `future` on the current runtime, owned by the returned handle.
    pub(crate) fn spawn(future: impl Future<Output = T> + Send + 'static) -> Self {
        Self {
            handle: tokio::spawn(future),
        }
    }
}

impl<T> Future for OwnedTask<T> {
    type Output = Result<T, JoinError>;
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.handle).poll(cx)
    }
}

impl<T> Drop for OwnedTask<T> {
    fn drop(&mut self) {
        self.handle.abort();
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn dropping_the_handle_ends_the_task() {
        let held = Arc::new(());
        let in_task = Arc::clone(&held);
        let task = OwnedTask::spawn(async move {
            let _kept = in_task;
            std::future::pending::<()>().await;
        });
        tokio::task::yield_now().await;
        assert_eq!(Arc::strong_count(&held), 2, "the task holds its clone");
        drop(task);
        for _ in 0..100 {
            if Arc::strong_count(&held) == 1 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        panic!("the task still runs after its handle was dropped");
    }

    #[tokio::test]
    async fn awaiting_gives_the_output() {
        assert_eq!(OwnedTask::spawn(async { 7 }).await.unwrap(), 7);
    }
}
