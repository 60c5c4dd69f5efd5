//! Table lookup: any int8 → int8 elementwise function (activation chains such as hard-swish,
//! sigmoid, clip; requantization between scales), computed at compile time from the float graph.

/// `y[i] = table[x[i] + 128]`.
pub fn reference(table: &[u8], x: &[u8], y: &mut [u8]) {
    for (o, &v) in y.iter_mut().zip(x) {
        *o = table[(v as i8 as i32 + 128) as usize];
    }
}
