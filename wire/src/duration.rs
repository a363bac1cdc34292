//! Prometheus durations (`model.ParseDuration` of `prometheus/common`): units `y`, `w`, `d`,
//! `h`, `m`, `s`, `ms`, each at most once and in that order (`1h30m`, `90s`, `0`), as
//! configuration files and the HTTP API write them. A year is 365 days.

const UNITS: [(&str, i64); 7] = [
    ("y", 365 * 86_400_000),
    ("w", 7 * 86_400_000),
    ("d", 86_400_000),
    ("h", 3_600_000),
    ("m", 60_000),
    ("s", 1000),
    ("ms", 1),
];

/// Milliseconds of a Prometheus duration; the error is Prometheus's message.
pub fn parse_duration_ms(s: &str) -> Result<i64, String> {
    if s.is_empty() {
        return Err("empty duration string".into());
    }
    if s == "0" {
        return Ok(0);
    }
    let invalid = || format!("not a valid duration string: {s:?}");
    let mut rest = s;
    let mut total: i64 = 0;
    let mut next_unit = 0;
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !c.is_ascii_digit()).unwrap_or(0);
        if digits == 0 {
            return Err(invalid());
        }
        let value: i64 = rest[..digits].parse().map_err(|_| invalid())?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let unit = &rest[..unit_len];
        let i = UNITS[next_unit..]
            .iter()
            .position(|&(u, _)| u == unit)
            .ok_or_else(invalid)?
            + next_unit;
        total = value
            .checked_mul(UNITS[i].1)
            .and_then(|v| total.checked_add(v))
            .ok_or_else(|| "duration out of range".to_string())?;
        next_unit = i + 1;
        rest = &rest[unit_len..];
    }
    Ok(total)
}

/// A duration as Prometheus prints one (`model.Duration.String`): the largest units first,
/// zero parts left out, `0s` for zero; `90s` is `1m30s`, a day is `1d`. Years and weeks only
/// when they are exact, since `90d` reads more easily than `12w6d`.
pub fn format_duration_ms(ms: i64) -> String {
    if ms == 0 {
        return "0s".into();
    }
    let mut out = String::new();
    let mut rest = ms.unsigned_abs();
    if ms < 0 {
        out.push('-');
    }
    for (unit, size) in UNITS {
        let size = size as u64;
        let exact_only = matches!(unit, "y" | "w");
        if rest >= size && (!exact_only || rest.is_multiple_of(size)) {
            out.push_str(&format!("{}{unit}", rest / size));
            rest %= size;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prometheus_durations() {
        assert_eq!(parse_duration_ms("0"), Ok(0));
        assert_eq!(parse_duration_ms("15s"), Ok(15_000));
        assert_eq!(parse_duration_ms("1h30m"), Ok(5_400_000));
        assert_eq!(parse_duration_ms("1d2h3m4s5ms"), Ok(93_784_005));
        assert_eq!(parse_duration_ms("2w"), Ok(14 * 86_400_000));
        assert_eq!(parse_duration_ms("1y"), Ok(365 * 86_400_000));
        for bad in ["", "15", "1.5s", "30m1h", "1s1s", "-1s", "1 s", "s", "1x"] {
            assert!(parse_duration_ms(bad).is_err(), "{bad:?} accepted");
        }
        for (ms, text) in [
            (0, "0s"),
            (15_000, "15s"),
            (90_000, "1m30s"),
            (86_400_000, "1d"),
            (1_500, "1s500ms"),
            (14 * 86_400_000, "2w"),
            (60 * 86_400_000, "60d"),
            (365 * 86_400_000, "1y"),
            (366 * 86_400_000, "366d"),
        ] {
            assert_eq!(format_duration_ms(ms), text);
            assert_eq!(parse_duration_ms(text), Ok(ms));
        }
        assert_eq!(
            parse_duration_ms("30m1h"),
            Err("not a valid duration string: \"30m1h\"".into())
        );
    }
}
