//! Racing a future against the fan-out's [`CancellationToken`], cancellation first.

use std::future::Future;
use std::pin::pin;
use std::task::Poll;

use tokio_util::sync::CancellationToken;

/// `fut`'s output, or `None` once `cancel` fires. When both are ready in the same poll,
/// cancellation wins: past a shutdown deadline no new batch is taken and no retry starts.
pub(crate) async fn unless_cancelled<F: Future>(
    cancel: &CancellationToken,
    fut: F,
) -> Option<F::Output> {
    let mut cancelled = pin!(cancel.cancelled());
    let mut fut = pin!(fut);
    std::future::poll_fn(|cx| {
        if cancelled.as_mut().poll(cx).is_ready() {
            return Poll::Ready(None);
        }
        fut.as_mut().poll(cx).map(Some)
    })
    .await
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn block_on<F: Future>(fut: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .expect("runtime")
            .block_on(fut)
    }

    #[test]
    fn the_future_wins_while_not_cancelled() {
        let cancel = CancellationToken::new();
        assert_eq!(block_on(unless_cancelled(&cancel, async { 7 })), Some(7));
    }

    #[test]
    fn cancellation_wins_a_tie() {
        let cancel = CancellationToken::new();
        cancel.cancel();
        assert_eq!(block_on(unless_cancelled(&cancel, async { 7 })), None);
    }

    #[test]
    fn cancelling_ends_a_pending_wait() {
        let cancel = CancellationToken::new();
        let canceller = cancel.clone();
        let out = block_on(async move {
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(20)).await;
                canceller.cancel();
            });
            tokio::time::timeout(
                Duration::from_secs(10),
                unless_cancelled(&cancel, std::future::pending::<()>()),
            )
            .await
        });
        assert_eq!(out, Ok(None));
    }
}
