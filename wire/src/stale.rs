//! The staleness marker.
//!
//! Prometheus marks the end of a series with a special NaN (`value.StaleNaN` in
//! `prometheus/model/value`): bit pattern `0x7ff0000000000002`. It is a sample like any other on
//! the wire; only its exact bits distinguish it from an ordinary NaN, so it must be compared by
//! bits, never with `is_nan()` alone.

/// Bit pattern of the staleness marker NaN.
pub const STALE_NAN_BITS: u64 = 0x7ff0_0000_0000_0002;

/// The staleness marker value.
pub fn stale_nan() -> f64 {
    f64::from_bits(STALE_NAN_BITS)
}

/// True only for the staleness marker, not for other NaNs.
pub fn is_stale_nan(v: f64) -> bool {
    v.to_bits() == STALE_NAN_BITS
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marker_is_a_nan_with_exact_bits() {
        assert!(stale_nan().is_nan());
        assert!(is_stale_nan(stale_nan()));
        assert!(!is_stale_nan(f64::NAN));
        assert!(!is_stale_nan(0.0));
        assert!(!is_stale_nan(f64::from_bits(0x7ff8_0000_0000_0001)));
    }
}
