//! Optimized kernels of the micro engine. Each computes exactly what the reference kernel in
//! `ops/` defines (integer accumulation is exact; requantization is the shared fixed-point step),
//! so results are identical; tests check them against the reference.
