//! A two-slot exchange between the preprocessing thread and the engine thread, on a mutex and a
//! condition variable: unlike channels, it never allocates, not even the first time a thread waits.

use std::sync::{Condvar, Mutex, MutexGuard};

/// Slots circulating between a producer (fills free slots) and a consumer (takes ready ones).
pub(crate) struct Exchange<T> {
    state: Mutex<State<T>>,
    changed: Condvar,
}

struct State<T> {
    free: heapless::Vec<T, 2>,
    ready: heapless::Deque<T, 2>,
    producer_done: bool,
    consumer_done: bool,
}

impl<T> Exchange<T> {
    /// An exchange whose free list holds `slots`.
    pub(crate) fn new(slots: [T; 2]) -> Self {
        let mut free = heapless::Vec::new();
        for s in slots {
            // Cannot fail: capacity 2.
            let _ = free.push(s);
        }
        Exchange {
            state: Mutex::new(State {
                free,
                ready: heapless::Deque::new(),
                producer_done: false,
                consumer_done: false,
            }),
            changed: Condvar::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State<T>> {
        // A panic on the other side poisons the lock; the state itself stays consistent.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn wait<'a>(&self, guard: MutexGuard<'a, State<T>>) -> MutexGuard<'a, State<T>> {
        self.changed.wait(guard).unwrap_or_else(|p| p.into_inner())
    }

    /// Producer: a free slot, waiting for one; `None` once the consumer has stopped.
    pub(crate) fn take_free(&self) -> Option<T> {
        let mut s = self.lock();
        loop {
            if s.consumer_done {
                return None;
            }
            if let Some(slot) = s.free.pop() {
                return Some(slot);
            }
            s = self.wait(s);
        }
    }

    /// Producer: hands a filled slot to the consumer.
    pub(crate) fn put_ready(&self, slot: T) {
        let mut s = self.lock();
        // Cannot overflow: only two slots exist.
        let _ = s.ready.push_back(slot);
        self.changed.notify_all();
    }

    /// Producer: returns a slot it could not fill.
    pub(crate) fn put_free(&self, slot: T) {
        let mut s = self.lock();
        let _ = s.free.push(slot);
        self.changed.notify_all();
    }

    /// Producer: no more frames.
    pub(crate) fn producer_done(&self) {
        self.lock().producer_done = true;
        self.changed.notify_all();
    }

    /// Consumer: the oldest ready slot, waiting for one; `None` when the producer is done and
    /// nothing is left.
    pub(crate) fn take_ready(&self) -> Option<T> {
        let mut s = self.lock();
        loop {
            if let Some(slot) = s.ready.pop_front() {
                return Some(slot);
            }
            if s.producer_done {
                return None;
            }
            s = self.wait(s);
        }
    }

    /// Consumer: returns a used slot.
    pub(crate) fn release(&self, slot: T) {
        self.put_free(slot);
    }

    /// Consumer: stop; the producer's next `take_free` returns `None`.
    pub(crate) fn consumer_done(&self) {
        self.lock().consumer_done = true;
        self.changed.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_flow_in_order_and_the_stream_ends() {
        let x = Exchange::new([0u32, 0]);
        std::thread::scope(|s| {
            s.spawn(|| {
                for i in 1..=100 {
                    let Some(_) = x.take_free() else { return };
                    x.put_ready(i);
                }
                x.producer_done();
            });
            let mut got = vec![];
            while let Some(v) = x.take_ready() {
                got.push(v);
                x.release(0);
            }
            assert_eq!(got, (1..=100).collect::<Vec<_>>());
        });
    }

    #[test]
    fn a_stopping_consumer_releases_a_waiting_producer() {
        let x = Exchange::new([0u32, 0]);
        std::thread::scope(|s| {
            let producer = s.spawn(|| {
                let mut n = 0;
                while let Some(slot) = x.take_free() {
                    x.put_ready(slot);
                    n += 1;
                }
                n
            });
            let _ = x.take_ready();
            x.consumer_done();
            assert!(producer.join().unwrap() <= 3);
        });
    }
}
