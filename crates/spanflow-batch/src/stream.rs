//! The async consumer (feature `tokio`).

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use futures_core::Stream;

use crate::Receiver;
use crate::batch::Batch;
use crate::clock::now_nanos;
use crate::consumer::Step;

/// The [`Receiver`] as a `futures_core::Stream` of batches; ends like the iterator does.
///
/// Waits on tokio's timer for the age deadline, so it must be polled inside a tokio runtime
/// with time enabled.
///
/// ```
/// use futures::StreamExt;
/// use spanflow_batch::Batcher;
///
/// # tokio::runtime::Builder::new_current_thread().enable_time().build()?.block_on(async {
/// let (batcher, receiver) = Batcher::<u64>::builder().max_items(2).build()?;
/// let mut stream = receiver.into_stream();
/// batcher.send(7)?;
/// batcher.send(8)?;
/// let batch = stream.next().await.expect("a full batch");
/// assert_eq!(&batch[..], &[7, 8]);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// # })?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct BatchStream<T: Send> {
    receiver: Receiver<T>,
    sleep: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl<T: Send> BatchStream<T> {
    pub(crate) fn new(receiver: Receiver<T>) -> Self {
        Self {
            receiver,
            sleep: None,
        }
    }

    /// The receiver back, for blocking use.
    pub fn into_inner(self) -> Receiver<T> {
        self.receiver
    }
}

impl<T: Send> Stream for BatchStream<T> {
    type Item = Batch<T>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Batch<T>>> {
        let this = self.get_mut();
        loop {
            let deadline = match this.receiver.step() {
                Step::Ready(batch) => return Poll::Ready(Some(batch)),
                Step::End => return Poll::Ready(None),
                Step::Wait(deadline) => deadline,
            };
            if this.receiver.shared.signal.take_or_register(cx.waker()) {
                continue;
            }
            if deadline == u64::MAX {
                this.sleep = None;
                return Poll::Pending;
            }
            let now = now_nanos(&*this.receiver.shared.config.clock);
            let when =
                tokio::time::Instant::now() + Duration::from_nanos(deadline.saturating_sub(now));
            let sleep = match &mut this.sleep {
                Some(sleep) => {
                    sleep.as_mut().reset(when);
                    sleep
                }
                slot => slot.insert(Box::pin(tokio::time::sleep_until(when))),
            };
            if sleep.as_mut().poll(cx).is_ready() {
                continue;
            }
            return Poll::Pending;
        }
    }
}

impl<T: Send> fmt::Debug for BatchStream<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BatchStream")
            .field("receiver", &self.receiver)
            .finish()
    }
}
