//! Polygons in frame fractions (motion masks; zones): `x` and `y` from 0.0 (left, top) to 1.0
//! (right, bottom), so a region survives a change of the camera's resolution.

use heapless::Vec;

/// Most corners a region may have.
pub const MAX_POINTS: usize = 32;

/// Why a region's corners were refused.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum RegionError {
    /// Fewer than three corners.
    TooFewPoints(usize),
    /// More than [`MAX_POINTS`] corners.
    TooManyPoints(usize),
    /// A coordinate outside 0.0..=1.0 (or not a number): corner index, value.
    OutOfFrame(usize, f32),
}

impl core::fmt::Display for RegionError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            RegionError::TooFewPoints(n) => write!(f, "a region needs at least 3 points, got {n}"),
            RegionError::TooManyPoints(n) => write!(f, "a region has at most {MAX_POINTS} points, got {n}"),
            RegionError::OutOfFrame(i, v) => write!(
                f,
                "point {i} has coordinate {v}: points are fractions of the frame's width and height, from 0.0 to 1.0"
            ),
        }
    }
}

/// A closed polygon in frame fractions.
#[derive(Debug, Clone, PartialEq)]
pub struct Region {
    points: Vec<(f32, f32), MAX_POINTS>,
}

impl Region {
    /// A region from its corners in order (either winding); checks count and range.
    pub fn new(points: &[(f32, f32)]) -> Result<Self, RegionError> {
        if points.len() < 3 {
            return Err(RegionError::TooFewPoints(points.len()));
        }
        let mut out = Vec::new();
        for (i, &(x, y)) in points.iter().enumerate() {
            for v in [x, y] {
                if !(0.0..=1.0).contains(&v) {
                    return Err(RegionError::OutOfFrame(i, v));
                }
            }
            out.push((x, y)).map_err(|_| RegionError::TooManyPoints(points.len()))?;
        }
        Ok(Region { points: out })
    }

    /// The corners.
    pub fn points(&self) -> &[(f32, f32)] {
        &self.points
    }

    /// Whether the point `(x, y)` (frame fractions) is inside (even-odd rule; a point on an edge
    /// may fall either way).
    pub fn contains(&self, x: f32, y: f32) -> bool {
        let p = &self.points;
        let mut inside = false;
        let mut j = p.len() - 1;
        for i in 0..p.len() {
            let (xi, yi) = p[i];
            let (xj, yj) = p[j];
            if (yi > y) != (yj > y) && x < (xj - xi) * (y - yi) / (yj - yi) + xi {
                inside = !inside;
            }
            j = i;
        }
        inside
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn points_inside_and_outside_a_concave_region() {
        // An L shape: the top-right quarter is outside.
        let l = Region::new(&[(0.0, 0.0), (0.5, 0.0), (0.5, 0.5), (1.0, 0.5), (1.0, 1.0), (0.0, 1.0)]).unwrap();
        assert!(l.contains(0.25, 0.25));
        assert!(l.contains(0.75, 0.75));
        assert!(!l.contains(0.75, 0.25));
        assert!(!l.contains(1.5, 0.75));
    }

    #[test]
    fn bad_corners_are_refused_with_what_is_wrong() {
        assert_eq!(Region::new(&[(0.0, 0.0), (1.0, 1.0)]), Err(RegionError::TooFewPoints(2)));
        assert_eq!(Region::new(&[(0.0, 0.0), (1.0, 1.2), (0.0, 1.0)]), Err(RegionError::OutOfFrame(1, 1.2)));
        assert!(matches!(Region::new(&[(0.0, f32::NAN), (1.0, 1.0), (0.0, 1.0)]), Err(RegionError::OutOfFrame(0, _))));
        let many = [(0.5, 0.5); MAX_POINTS + 1];
        assert_eq!(Region::new(&many), Err(RegionError::TooManyPoints(MAX_POINTS + 1)));
    }
}
