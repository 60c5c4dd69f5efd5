//! Where a speaker's samples come from: the [`Microphone`] trait (what the audio loops need:
//! blocks of 16-bit samples at a fixed rate, and a count of what was lost), and [`Recording`],
//! audio in flash. The live sources implement it too: the UART stream of the QEMU board
//! (`uart.rs`); a board's PDM or I2S microphone driver is one more implementation.

use crate::app::AppError;

/// A source of mono 16-bit samples at a fixed rate.
pub trait Microphone {
    /// Samples per second.
    fn sample_rate(&self) -> u32;

    /// Fills the start of `block` with the next samples, waiting for them; returns how many were
    /// written: all of `block` except at the end of the stream, 0 once it ended.
    fn read(&mut self, block: &mut [i16]) -> Result<usize, AppError>;

    /// Samples the microphone delivered but nobody took in time (the loop was late), so far.
    fn overruns(&self) -> u64;
}

/// A recording in memory (16-bit little-endian PCM), read in order; it never overruns.
// The live build takes its audio from UART0 only (the host tests still run this).
#[cfg_attr(feature = "live", allow(dead_code))]
pub struct Recording<'a> {
    bytes: &'a [u8],
    rate: u32,
}

#[cfg_attr(feature = "live", allow(dead_code))]
impl<'a> Recording<'a> {
    /// The recording `bytes` at `rate` samples per second (an odd last byte is ignored).
    pub fn new(bytes: &'a [u8], rate: u32) -> Self {
        Recording { bytes, rate }
    }
}

impl Microphone for Recording<'_> {
    fn sample_rate(&self) -> u32 {
        self.rate
    }

    fn read(&mut self, block: &mut [i16]) -> Result<usize, AppError> {
        let n = block.len().min(self.bytes.len() / 2);
        let (now, rest) = self.bytes.split_at(2 * n);
        for (s, b) in block.iter_mut().zip(now.chunks_exact(2)) {
            *s = i16::from_le_bytes([b[0], b[1]]);
        }
        self.bytes = if n == 0 { &[] } else { rest };
        Ok(n)
    }

    fn overruns(&self) -> u64 {
        0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_recording_gives_full_blocks_then_the_rest_then_nothing() {
        let bytes: Vec<u8> = (0..7i16).flat_map(|s| (s * -300).to_le_bytes()).chain([0x55]).collect();
        let mut mic = Recording::new(&bytes, 16000);
        let mut block = [0i16; 3];
        assert_eq!(mic.read(&mut block), Ok(3));
        assert_eq!(block, [0, -300, -600]);
        assert_eq!(mic.read(&mut block), Ok(3));
        assert_eq!(mic.read(&mut block), Ok(1));
        assert_eq!(block[0], -1800);
        assert_eq!(mic.read(&mut block), Ok(0));
        assert_eq!(mic.read(&mut block), Ok(0));
        assert_eq!((mic.sample_rate(), mic.overruns()), (16000, 0));
    }
}
