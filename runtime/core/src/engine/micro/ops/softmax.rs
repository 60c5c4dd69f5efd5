//! Softmax over the last axis with integer arithmetic: `e = table[max - x]` (Q16 `exp(-d·s)`),
//! `out = round(256·e / Σe) - 128` (scale 1/256, zero point -128).

/// The reference kernel; `c` is the length of the last axis.
pub fn reference(table: &[u8], c: usize, x: &[u8], y: &mut [u8]) {
    let e = |d: usize| u32::from_le_bytes([table[4 * d], table[4 * d + 1], table[4 * d + 2], table[4 * d + 3]]) as u64;
    for (row, out) in x.chunks_exact(c).zip(y.chunks_exact_mut(c)) {
        let max = row.iter().map(|&v| v as i8).max().unwrap_or(0) as i32;
        let sum: u64 = row.iter().map(|&v| e((max - v as i8 as i32) as usize)).sum();
        for (o, &v) in out.iter_mut().zip(row) {
            let num = e((max - v as i8 as i32) as usize) * 256;
            let q = ((num + sum / 2) / sum.max(1)) as i32 - 128;
            *o = q.clamp(-128, 127) as i8 as u8;
        }
    }
}
