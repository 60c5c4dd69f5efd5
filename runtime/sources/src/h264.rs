//! H.264 decoding for the network and file sources: OpenH264 (built from its bundled source) on
//! Annex B access units, pictures copied out as packed I420 (the pipeline reads YUV directly, no
//! RGB conversion), and the bitstream checks the sources use to skip work: a frame no other frame
//! refers to need not be decoded when it would be dropped anyway.

use lepton_core::error::{LeptonError, Result};
use openh264::decoder::{DecodedYUV, Decoder, DecoderConfig, Flush};
use openh264::formats::YUVSource;
use openh264::OpenH264API;
use std::collections::VecDeque;

/// Largest picture accepted (8K UHD); a stream claiming more is an error, not an allocation.
pub const MAX_PIXELS: usize = 7680 * 4320;

/// An H.264 decoder for one stream.
pub struct H264 {
    decoder: Decoder,
    name: String,
    /// Pictures still held for reordering when the stream ended, in display order.
    flushed: VecDeque<(Picture, Vec<u8>)>,
}

/// A decoded picture's size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Picture {
    /// Width in pixels (even).
    pub width: usize,
    /// Height in pixels (even).
    pub height: usize,
}

impl H264 {
    /// A decoder; `name` (the stream, without credentials) names it in errors.
    pub fn new(name: &str) -> Result<Self> {
        // No forced flush after each access unit: a stream with B-frames is reordered by the
        // decoder and its pictures come out in display order.
        let config = DecoderConfig::new().flush_after_decode(Flush::NoFlush);
        let decoder = Decoder::with_api_config(OpenH264API::from_source(), config)
            .map_err(|e| LeptonError::Source { name: name.into(), reason: e.to_string() })?;
        Ok(H264 { decoder, name: name.into(), flushed: VecDeque::new() })
    }

    /// The end of the stream: pictures the decoder still holds for reordering are taken out, to
    /// be read with [`H264::next_flushed`]; returns how many.
    pub fn flush(&mut self) -> Result<usize> {
        let name = &self.name;
        let held = self
            .decoder
            .flush_remaining()
            .map_err(|e| LeptonError::Source { name: name.clone(), reason: format!("H.264: {e}") })?;
        for yuv in &held {
            let mut out = vec![];
            let p = copy_i420(yuv, &mut out, name)?;
            self.flushed.push_back((p, out));
        }
        Ok(self.flushed.len())
    }

    /// The next picture [`H264::flush`] took out, into `out`.
    pub fn next_flushed(&mut self, out: &mut Vec<u8>) -> Option<Picture> {
        let (p, data) = self.flushed.pop_front()?;
        *out = data;
        Some(p)
    }

    /// Decodes one access unit (Annex B, parameter sets in band or sent before). On a picture,
    /// `out` is cleared and holds it as packed I420 (its capacity is reused) and its size is
    /// returned; `None` while the decoder needs more data.
    pub fn decode(&mut self, access_unit: &[u8], out: &mut Vec<u8>) -> Result<Option<Picture>> {
        let picture = self
            .decoder
            .decode(access_unit)
            .map_err(|e| LeptonError::Source { name: self.name.clone(), reason: format!("H.264: {e}") })?;
        let Some(yuv) = picture else { return Ok(None) };
        copy_i420(&yuv, out, &self.name).map(Some)
    }
}

/// Copies a decoded picture into `out` as packed I420.
fn copy_i420(yuv: &DecodedYUV<'_>, out: &mut Vec<u8>, name: &str) -> Result<Picture> {
    let (w, h) = yuv.dimensions();
    // 4:2:0 chroma covers pixel pairs: an odd edge column or row is left out.
    let (w, h) = (w & !1, h & !1);
    if w == 0 || h == 0 || w * h > MAX_PIXELS {
        return Err(LeptonError::Source { name: name.into(), reason: format!("H.264 picture of {w}x{h}") });
    }
    let (ys, us, vs) = yuv.strides();
    out.clear();
    out.reserve(w * h * 3 / 2);
    for (plane, stride, pw, ph) in [(yuv.y(), ys, w, h), (yuv.u(), us, w / 2, h / 2), (yuv.v(), vs, w / 2, h / 2)] {
        for row in 0..ph {
            out.extend_from_slice(&plane[row * stride..row * stride + pw]);
        }
    }
    Ok(Picture { width: w, height: h })
}

/// The NAL units of an Annex B buffer (start codes removed).
pub fn nal_units(annex_b: &[u8]) -> impl Iterator<Item = &[u8]> {
    openh264::nal_units(annex_b).map(|n| {
        // Each unit comes with its start code; strip it to the NAL header.
        let start = n.iter().position(|&b| b == 1).map_or(0, |i| i + 1);
        let mut unit = &n[start..];
        // The splitter cuts at `00 00 01`: the leading zero of a 4-byte start code stays at the
        // end of the unit before. A NAL unit never ends in a zero byte (its RBSP trailing bits).
        while let [rest @ .., 0] = unit {
            unit = rest;
        }
        unit
    })
}

/// `true` when no later frame refers to this access unit: every slice has `nal_ref_idc` 0.
/// Such a frame can be skipped without decoding when it would be dropped anyway.
pub fn disposable(annex_b: &[u8]) -> bool {
    let mut slices = 0;
    for nal in nal_units(annex_b) {
        let Some(&header) = nal.first() else { continue };
        let (ref_idc, kind) = (header >> 5 & 3, header & 0x1f);
        if (1..=5).contains(&kind) {
            if ref_idc != 0 {
                return false;
            }
            slices += 1;
        }
    }
    slices > 0
}

/// `true` when the access unit holds an IDR slice (NAL type 5): decoding can start here.
pub fn has_idr(annex_b: &[u8]) -> bool {
    nal_units(annex_b).any(|n| n.first().is_some_and(|h| h & 0x1f == 5))
}

/// Appends length-prefixed NAL units (MP4/Matroska framing, `length_size` bytes per length) to
/// `out` as Annex B; an error names the stream when a length runs past the sample.
pub fn append_annex_b(sample: &[u8], length_size: usize, out: &mut Vec<u8>, name: &str) -> Result<()> {
    let bad = |reason: String| LeptonError::Source { name: name.into(), reason };
    if !(1..=4).contains(&length_size) {
        return Err(bad(format!("NAL length size {length_size} (1 to 4 bytes)")));
    }
    let mut rest = sample;
    while !rest.is_empty() {
        if rest.len() < length_size {
            return Err(bad(format!("a sample ends inside a NAL length ({} bytes left)", rest.len())));
        }
        let len = rest[..length_size].iter().fold(0usize, |n, &b| n << 8 | b as usize);
        rest = &rest[length_size..];
        if len > rest.len() {
            return Err(bad(format!("a NAL of {len} bytes in a sample with {} bytes left", rest.len())));
        }
        out.extend_from_slice(&[0, 0, 0, 1]);
        out.extend_from_slice(&rest[..len]);
        rest = &rest[len..];
    }
    Ok(())
}

/// Appends parameter sets (raw NAL units) as Annex B.
pub fn append_parameter_sets<'a>(sets: impl IntoIterator<Item = &'a [u8]>, out: &mut Vec<u8>) {
    for s in sets {
        out.extend_from_slice(&[0, 0, 0, 1]);
        out.extend_from_slice(s);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn length_prefixed_units_become_annex_b_and_bad_lengths_are_errors() {
        let mut out = vec![];
        append_annex_b(&[0, 0, 0, 2, 0x65, 0xAA, 0, 0, 0, 1, 0x01], 4, &mut out, "t").unwrap();
        assert_eq!(out, [0, 0, 0, 1, 0x65, 0xAA, 0, 0, 0, 1, 0x01]);
        let units: Vec<&[u8]> = nal_units(&out).collect();
        assert_eq!(units, [&[0x65, 0xAA][..], &[0x01][..]]);
        let e = append_annex_b(&[0, 0, 0, 9, 0x65], 4, &mut vec![], "cam.mp4").unwrap_err().to_string();
        assert!(e.contains("cam.mp4") && e.contains("9 bytes"), "{e}");
    }

    #[test]
    fn only_frames_without_references_are_disposable() {
        // nal_ref_idc 0, non-IDR slice: disposable; ref_idc 2: not; an IDR never; SEI alone: not a frame.
        assert!(disposable(&[0, 0, 0, 1, 0x01, 0x88]));
        assert!(!disposable(&[0, 0, 0, 1, 0x41, 0x88]));
        assert!(!disposable(&[0, 0, 0, 1, 0x06, 0x05, 0, 0, 0, 1, 0x65, 0x88]));
        assert!(!disposable(&[0, 0, 0, 1, 0x06, 0x05]));
        assert!(has_idr(&[0, 0, 0, 1, 0x67, 0x42, 0, 0, 0, 1, 0x65, 0x88]));
        assert!(!has_idr(&[0, 0, 0, 1, 0x41, 0x88]));
    }
}
