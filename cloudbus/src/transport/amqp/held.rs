//! amqprs closes a connection or channel that is dropped while still open
//! by spawning a task, which panics outside a tokio runtime: a `Bus` kept
//! past its runtime (dropped after `Runtime::block_on` returned, say)
//! would panic, and abort if already unwinding. [`Held`] drops such a
//! handle as usual inside a runtime and leaks it outside one, where the
//! process is ending anyway and the broker notices the socket close.

use std::ops::Deref;

/// An amqprs handle that is never dropped outside a tokio runtime.
#[derive(Clone)]
pub(crate) struct Held<T>(Option<T>);

impl<T> Held<T> {
    pub(crate) fn new(handle: T) -> Self {
        Self(Some(handle))
    }
}

impl<T> Deref for Held<T> {
    type Target = T;
    fn deref(&self) -> &T {
        self.0.as_ref().expect("taken only when dropped")
    }
}

impl<T> Drop for Held<T> {
    fn drop(&mut self) {
        if tokio::runtime::Handle::try_current().is_err() {
            std::mem::forget(self.0.take());
        }
    }
}
