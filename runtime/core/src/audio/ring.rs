//! A fixed-capacity sample ring: the microphone side writes blocks, the pipeline side reads them.
//! When the reader falls behind, the oldest samples are overwritten and counted; nothing is lost
//! without a number to show for it.

/// Ring of `N` samples with an overrun counter.
#[derive(Debug, Clone)]
pub struct SampleRing<T: Copy + Default, const N: usize> {
    buf: [T; N],
    read: usize,
    len: usize,
    overrun: u64,
}

impl<T: Copy + Default, const N: usize> Default for SampleRing<T, N> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T: Copy + Default, const N: usize> SampleRing<T, N> {
    /// An empty ring.
    pub fn new() -> Self {
        SampleRing { buf: [T::default(); N], read: 0, len: 0, overrun: 0 }
    }

    /// Samples waiting to be read.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when nothing is waiting.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Capacity in samples.
    pub const fn capacity(&self) -> usize {
        N
    }

    /// Total samples overwritten before they were read, since creation.
    pub fn overrun(&self) -> u64 {
        self.overrun
    }

    /// Appends samples, overwriting the oldest unread ones when full; returns how many were overwritten.
    pub fn push(&mut self, samples: &[T]) -> usize {
        if N == 0 {
            self.overrun += samples.len() as u64;
            return samples.len();
        }
        let mut lost = 0;
        for &s in samples {
            let write = (self.read + self.len) % N;
            self.buf[write] = s;
            if self.len == N {
                self.read = (self.read + 1) % N;
                lost += 1;
            } else {
                self.len += 1;
            }
        }
        self.overrun += lost as u64;
        lost
    }

    /// Moves up to `out.len()` of the oldest samples into `out`; returns how many.
    pub fn pop_into(&mut self, out: &mut [T]) -> usize {
        let n = out.len().min(self.len);
        for o in out.iter_mut().take(n) {
            *o = self.buf[self.read];
            self.read = (self.read + 1) % N;
        }
        self.len -= n;
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_in_order_across_the_wrap() {
        let mut r: SampleRing<i16, 4> = SampleRing::new();
        assert_eq!(r.push(&[1, 2, 3]), 0);
        let mut out = [0i16; 2];
        assert_eq!(r.pop_into(&mut out), 2);
        assert_eq!(out, [1, 2]);
        r.push(&[4, 5, 6]);
        let mut out = [0i16; 8];
        assert_eq!(r.pop_into(&mut out), 4);
        assert_eq!(&out[..4], &[3, 4, 5, 6]);
        assert!(r.is_empty());
    }

    #[test]
    fn overruns_drop_the_oldest_and_are_counted() {
        let mut r: SampleRing<f32, 3> = SampleRing::new();
        assert_eq!(r.push(&[1.0, 2.0, 3.0, 4.0, 5.0]), 2);
        assert_eq!(r.overrun(), 2);
        let mut out = [0.0; 3];
        r.pop_into(&mut out);
        assert_eq!(out, [3.0, 4.0, 5.0]);
    }
}
