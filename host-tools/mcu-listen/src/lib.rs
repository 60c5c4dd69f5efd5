//! The host side of the firmware's live audio link (`firmware/mcu`, feature `live`): the stream
//! header it expects on UART0, the event frames it sends on UART1, and its console's summary
//! line. The `lepton-mcu-listen` binary uses these to run the firmware under QEMU.

use lepton_core::event::{decode_frame, Event};
use std::collections::BTreeMap;

/// The stream header's first four bytes (the firmware's `uart::MAGIC`).
pub const MAGIC: [u8; 4] = *b"LPCM";
/// The longest frame accepted (an event is at most 18 bytes of postcard, 19 with COBS); longer
/// runs of bytes without a zero are not frames.
pub const MAX_FRAME: usize = 64;

/// Why the firmware's output could not be read.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum LinkError {
    /// The recording is longer than the header can announce.
    #[error("the recording has {0} samples; the stream header holds at most 4,294,967,294")]
    TooLong(usize),
    /// The summary line is missing a field or has a bad value.
    #[error("the firmware's summary line `{line}`: {what}")]
    Summary {
        /// The line as printed.
        line: String,
        /// What is wrong with it.
        what: String,
    },
}

/// The 12 bytes that open a stream of `samples` samples at `rate` Hz.
pub fn header(rate: u32, samples: usize) -> Result<[u8; 12], LinkError> {
    let n = u32::try_from(samples).ok().filter(|&n| n != u32::MAX).ok_or(LinkError::TooLong(samples))?;
    let mut h = [0u8; 12];
    h[..4].copy_from_slice(&MAGIC);
    h[4..8].copy_from_slice(&rate.to_le_bytes());
    h[8..].copy_from_slice(&n.to_le_bytes());
    Ok(h)
}

/// Splits the event line's bytes into frames and decodes them; bytes that do not form an event
/// are counted, never fatal.
#[derive(Debug, Default)]
pub struct Frames {
    partial: Vec<u8>,
    /// Frames that did not decode (or ran past [`MAX_FRAME`] bytes).
    pub bad: u64,
}

impl Frames {
    /// Takes the next bytes read; returns the events they complete.
    pub fn push(&mut self, bytes: &[u8]) -> Vec<Event> {
        let mut events = vec![];
        for &b in bytes {
            if b != 0 {
                if self.partial.len() < MAX_FRAME {
                    self.partial.push(b);
                } else if self.partial.len() == MAX_FRAME {
                    // Too long: counted once, the rest skipped up to the next zero.
                    self.bad += 1;
                    self.partial.push(b);
                }
                continue;
            }
            if self.partial.len() <= MAX_FRAME && !self.partial.is_empty() {
                match decode_frame::<Event>(&mut self.partial) {
                    Ok(e) => events.push(e),
                    Err(_) => self.bad += 1,
                }
            }
            self.partial.clear();
        }
        events
    }

    /// Bytes left after the last zero (a frame cut off when the line closed).
    pub fn pending(&self) -> usize {
        self.partial.len()
    }
}

/// The firmware's summary line: `audio <source> key=value ...`, values as integers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    /// Where the audio came from (`uart0` for the live stream, a file name when it was in flash).
    pub source: String,
    /// The `key=value` fields.
    pub fields: BTreeMap<String, u64>,
}

impl Summary {
    /// Parses `line` if it is the summary line (`None` if it is another line).
    pub fn parse(line: &str) -> Option<Result<Summary, LinkError>> {
        let rest = line.strip_prefix("audio ")?;
        let bad = |what: String| LinkError::Summary { line: line.to_string(), what };
        let mut words = rest.split(' ');
        let source = words.next().unwrap_or_default().to_string();
        let mut fields = BTreeMap::new();
        for kv in words {
            let Some((k, v)) = kv.split_once('=') else { return Some(Err(bad(format!("`{kv}` is not key=value")))) };
            let Ok(v) = v.parse() else { return Some(Err(bad(format!("{k}={v} is not a count")))) };
            fields.insert(k.to_string(), v);
        }
        Some(Ok(Summary { source, fields }))
    }

    /// The value of `key`.
    pub fn get(&self, key: &str) -> Result<u64, LinkError> {
        self.fields.get(key).copied().ok_or_else(|| LinkError::Summary {
            line: format!("audio {} {:?}", self.source, self.fields),
            what: format!("no `{key}`"),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lepton_core::event::{encode_frame, EventKind};

    #[test]
    fn the_header_is_magic_rate_and_count() {
        assert_eq!(header(16000, 5).unwrap(), [b'L', b'P', b'C', b'M', 0x80, 0x3e, 0, 0, 5, 0, 0, 0]);
        assert_eq!(header(16000, u32::MAX as usize), Err(LinkError::TooLong(u32::MAX as usize)));
    }

    #[test]
    fn frames_split_across_reads_decode_and_junk_is_counted() {
        let e = Event { class: 1, kind: EventKind::Start, timestamp_ms: 1120, score: 0.9 };
        let mut buf = [0u8; 40];
        let frame = encode_frame(&e, &mut buf).unwrap().to_vec();
        let mut f = Frames::default();
        let (a, b) = frame.split_at(3);
        assert!(f.push(a).is_empty());
        assert_eq!(f.push(b), vec![e]);
        // Junk, an overlong run, empty frames: counted or skipped, the next frame still decodes.
        let mut junk = vec![0x05, 0xff, 0x00, 0x00];
        junk.extend(std::iter::repeat_n(7u8, 300));
        junk.push(0);
        junk.extend(&frame);
        assert_eq!(f.push(&junk), vec![e]);
        assert_eq!(f.bad, 2);
        assert_eq!(f.pending(), 0);
    }

    #[test]
    fn the_summary_line_parses_and_other_lines_are_not_it() {
        let s = Summary::parse("audio uart0 samples=73600 runs=225 overruns=0").unwrap().unwrap();
        assert_eq!((s.source.as_str(), s.get("samples"), s.get("overruns")), ("uart0", Ok(73600), Ok(0)));
        assert!(s.get("cycles_per_second").is_err());
        assert!(Summary::parse("pin high at 10").is_none());
        assert!(Summary::parse("audio uart0 samples=-1").unwrap().is_err());
        assert!(Summary::parse("audio uart0 samples").unwrap().is_err());
    }
}
