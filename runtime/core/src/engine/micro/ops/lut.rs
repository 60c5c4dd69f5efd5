//! Table lookup: any int8 → int8 elementwise function (activation chains such as hard-swish,
//! sigmoid, clip; requantization between scales), computed at compile time from the float graph.

/// `y[i] = table[x[i] + 128]` (`table` has 256 entries: checked when the model loads).
pub fn reference(table: &[u8], x: &[u8], y: &mut [u8]) {
    let Ok(table) = <&[u8; 256]>::try_from(table) else {
        debug_assert!(false, "a table has 256 entries");
        return;
    };
    for (o, &v) in y.iter_mut().zip(x) {
        *o = table[(v ^ 0x80) as usize];
    }
}
