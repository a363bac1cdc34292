//! Go's printing of numbers, strings and times, as rule templates print them: rule authors
//! compare alert text with what Prometheus sends, so `{{ $value }}` must read `1.234567e+06`
//! and `{{ humanize 1048576 }}` `1.049M` here too.
//!
//! `format_float` is `strconv.FormatFloat`; `sprintf` is `fmt.Sprintf` for the verbs rule
//! templates use (`%v %s %d %f %e %g %q %x %t` with flags, width and precision), with Go's
//! `%!verb(type=value)` for a value of the wrong type.

use std::fmt::Write;

/// A value as `fmt` sees it.
#[derive(Debug, Clone, Copy)]
pub enum Arg<'a> {
    Int(i64),
    Float(f64),
    Str(&'a str),
    Bool(bool),
    /// Anything else, with its Go type name and its `%v` text.
    Other(&'a str, &'a str),
}

/// The decimal digits of `|v|` (no trailing zeros, at least one digit) and the position of
/// the decimal point: shortest round-trip digits, or rounded to `significant` digits.
fn decimal(v: f64, significant: Option<usize>) -> (Vec<u8>, i32) {
    let text = match significant {
        None => format!("{:e}", v.abs()),
        Some(n) => format!("{:.*e}", n.saturating_sub(1), v.abs()),
    };
    let (mantissa, exp) = text.split_once('e').unwrap_or((&text, "0"));
    let mut digits: Vec<u8> = mantissa.bytes().filter(u8::is_ascii_digit).collect();
    while digits.len() > 1 && digits.last() == Some(&b'0') {
        digits.pop();
    }
    (digits, exp.parse::<i32>().unwrap_or(0) + 1)
}

fn sign(v: f64) -> &'static str {
    if v.is_sign_negative() && v != 0.0 {
        "-"
    } else {
        ""
    }
}

/// `%e` of the digits with `prec` digits after the point.
fn fmt_e(neg: &str, digits: &[u8], dp: i32, prec: usize, e: char) -> String {
    let mut out = String::from(neg);
    out.push(digits[0] as char);
    if prec > 0 {
        out.push('.');
        for i in 1..=prec {
            out.push(*digits.get(i).unwrap_or(&b'0') as char);
        }
    }
    let exp = if digits == b"0" { 0 } else { dp - 1 };
    let _ = write!(
        out,
        "{e}{}{:02}",
        if exp < 0 { '-' } else { '+' },
        exp.abs()
    );
    out
}

/// `%f` of the digits with `prec` digits after the point.
fn fmt_f(neg: &str, digits: &[u8], dp: i32, prec: usize) -> String {
    let digit = |i: i32| -> char {
        if i < 0 {
            '0'
        } else {
            *digits.get(i as usize).unwrap_or(&b'0') as char
        }
    };
    let mut out = String::from(neg);
    if dp > 0 {
        (0..dp).for_each(|i| out.push(digit(i)));
    } else {
        out.push('0');
    }
    if prec > 0 {
        out.push('.');
        (0..prec as i32).for_each(|i| out.push(digit(dp + i)));
    }
    out
}

/// `strconv.FormatFloat(v, fmt, prec, 64)` for `fmt` in `e E f g G`; `prec` < 0 is the
/// fewest digits that read back as `v`.
pub fn format_float(v: f64, fmt: char, prec: i32) -> String {
    if v.is_nan() {
        return "NaN".into();
    }
    if v.is_infinite() {
        return if v > 0.0 { "+Inf" } else { "-Inf" }.into();
    }
    let neg = sign(v);
    let shortest = prec < 0;
    match fmt {
        'e' | 'E' => {
            let (digits, dp) = decimal(v, (!shortest).then(|| prec as usize + 1));
            let prec = if shortest {
                digits.len() - 1
            } else {
                prec as usize
            };
            fmt_e(neg, &digits, dp, prec, fmt)
        }
        'f' | 'F' if shortest => {
            let (digits, dp) = decimal(v, None);
            let prec = (digits.len() as i32 - dp).max(0) as usize;
            fmt_f(neg, &digits, dp, prec)
        }
        'f' | 'F' => format!("{neg}{:.*}", prec as usize, v.abs()),
        _ => {
            // strconv's %g: exponent form when the exponent is below -4 or at least the
            // precision (6 for the shortest form), and no trailing zeros.
            let want = if shortest {
                None
            } else {
                Some(prec.max(1) as usize)
            };
            let (digits, dp) = decimal(v, want);
            let nd = digits.len() as i32;
            let mut p = want.map_or(nd, |p| p as i32);
            let mut eprec = p;
            if eprec > nd && nd >= dp {
                eprec = nd;
            }
            if shortest {
                eprec = 6;
            }
            let exp = if digits == b"0" { 0 } else { dp - 1 };
            let e = if fmt == 'G' { 'E' } else { 'e' };
            if exp < -4 || exp >= eprec {
                p = p.min(nd);
                return fmt_e(neg, &digits, dp, (p - 1).max(0) as usize, e);
            }
            if p > dp {
                p = nd;
            }
            fmt_f(neg, &digits, dp, (p - dp).max(0) as usize)
        }
    }
}

/// `strconv.Quote`: a double-quoted Go string literal.
pub fn quote(s: &str) -> String {
    let mut out = String::from('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\u{7}' => out.push_str("\\a"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{b}' => out.push_str("\\v"),
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            c if c.is_control() => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

impl Arg<'_> {
    fn type_name(&self) -> &str {
        match self {
            Arg::Int(_) => "int",
            Arg::Float(_) => "float64",
            Arg::Str(_) => "string",
            Arg::Bool(_) => "bool",
            Arg::Other(t, _) => t,
        }
    }

    /// `%v`.
    pub fn plain(&self) -> String {
        match self {
            Arg::Int(i) => i.to_string(),
            Arg::Float(f) => format_float(*f, 'g', -1),
            Arg::Str(s) => s.to_string(),
            Arg::Bool(b) => b.to_string(),
            Arg::Other(_, v) => v.to_string(),
        }
    }
}

/// `fmt.Sprint`: operands printed with `%v`, with a space between two that are not strings.
pub fn sprint(args: &[Arg]) -> String {
    let mut out = String::new();
    for (i, a) in args.iter().enumerate() {
        let is_str = |a: &Arg| matches!(a, Arg::Str(_));
        if i > 0 && !is_str(a) && !is_str(&args[i - 1]) {
            out.push(' ');
        }
        out.push_str(&a.plain());
    }
    out
}

/// Largest width or precision (fmt's `tooLarge`).
const MAX_WIDTH: usize = 1_000_000;

#[derive(Default)]
struct Spec {
    minus: bool,
    plus: bool,
    space: bool,
    zero: bool,
    sharp: bool,
    width: Option<usize>,
    prec: Option<usize>,
}

impl Spec {
    fn pad(&self, body: String) -> String {
        let len = body.chars().count();
        let Some(width) = self.width.filter(|w| *w > len) else {
            return body;
        };
        let fill = width - len;
        if self.minus {
            return body + &" ".repeat(fill);
        }
        if self.zero {
            let (sign, digits) = match body.strip_prefix(['-', '+', ' ']) {
                Some(rest) => (&body[..1], rest),
                None => ("", body.as_str()),
            };
            return format!("{sign}{}{digits}", "0".repeat(fill));
        }
        " ".repeat(fill) + &body
    }

    fn signed(&self, body: String) -> String {
        if body.starts_with('-') {
            body
        } else if self.plus {
            format!("+{body}")
        } else if self.space {
            format!(" {body}")
        } else {
            body
        }
    }
}

/// `fmt.Sprintf` for the verbs rule templates use.
pub fn sprintf(format: &str, args: &[Arg]) -> String {
    let mut out = String::new();
    let mut next = 0;
    let mut chars = format.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        let mut spec = Spec::default();
        while let Some(&f) = chars.peek() {
            match f {
                '-' => spec.minus = true,
                '+' => spec.plus = true,
                ' ' => spec.space = true,
                '0' => spec.zero = !spec.minus,
                '#' => spec.sharp = true,
                _ => break,
            }
            chars.next();
        }
        let number = |chars: &mut std::iter::Peekable<std::str::Chars>| {
            let mut n: Option<usize> = None;
            while let Some(d) = chars.peek().and_then(|c| c.to_digit(10)) {
                n = Some(n.unwrap_or(0).saturating_mul(10).saturating_add(d as usize));
                chars.next();
            }
            n
        };
        spec.width = number(&mut chars);
        if spec.width.is_some_and(|w| w > MAX_WIDTH) {
            out.push_str("%!(BADWIDTH)");
            spec.width = None;
        }
        if chars.peek() == Some(&'.') {
            chars.next();
            spec.prec = Some(number(&mut chars).unwrap_or(0));
            if spec.prec.is_some_and(|p| p > MAX_WIDTH) {
                out.push_str("%!(BADPREC)");
                spec.prec = None;
            }
        }
        let Some(verb) = chars.next() else {
            out.push_str("%!(NOVERB)");
            break;
        };
        if verb == '%' {
            out.push('%');
            continue;
        }
        let Some(arg) = args.get(next) else {
            let _ = write!(out, "%!{verb}(MISSING)");
            continue;
        };
        next += 1;
        out.push_str(&format_one(&spec, verb, arg));
    }
    if next < args.len() {
        out.push_str("%!(EXTRA ");
        let extra: Vec<String> = args[next..]
            .iter()
            .map(|a| format!("{}={}", a.type_name(), a.plain()))
            .collect();
        out.push_str(&extra.join(", "));
        out.push(')');
    }
    out
}

fn format_one(spec: &Spec, verb: char, arg: &Arg) -> String {
    let bad = || format!("%!{verb}({}={})", arg.type_name(), arg.plain());
    let body = match (verb, arg) {
        ('v' | 'd', Arg::Int(i)) => spec.signed(i.to_string()),
        ('x', Arg::Int(i)) => spec.signed(hex(*i, false, spec.sharp)),
        ('X', Arg::Int(i)) => spec.signed(hex(*i, true, spec.sharp)),
        ('o', Arg::Int(i)) => spec.signed(if *i < 0 {
            format!("-{:o}", i.unsigned_abs())
        } else {
            format!("{i:o}")
        }),
        ('b', Arg::Int(i)) => spec.signed(if *i < 0 {
            format!("-{:b}", i.unsigned_abs())
        } else {
            format!("{i:b}")
        }),
        ('c', Arg::Int(i)) => char::from_u32(*i as u32).unwrap_or('\u{fffd}').to_string(),
        ('q', Arg::Int(i)) => format!("{:?}", char::from_u32(*i as u32).unwrap_or('\u{fffd}')),
        ('v' | 'g' | 'G' | 'e' | 'E' | 'f' | 'F', Arg::Float(f)) => {
            let (fmt, default) = match verb {
                'v' => ('g', -1),
                'F' => ('f', 6),
                'g' | 'G' => (verb, -1),
                _ => (verb, 6),
            };
            let prec = spec.prec.map_or(default, |p| p as i32);
            let text = format_float(*f, fmt, prec);
            // fmt keeps the sign of an infinity ("+Inf").
            if f.is_infinite() {
                text
            } else {
                spec.signed(text)
            }
        }
        ('v' | 's', Arg::Str(s)) => match spec.prec {
            Some(p) => s.chars().take(p).collect(),
            None => s.to_string(),
        },
        ('q', Arg::Str(s)) => quote(s),
        ('x', Arg::Str(s)) => s.bytes().map(|b| format!("{b:02x}")).collect(),
        ('X', Arg::Str(s)) => s.bytes().map(|b| format!("{b:02X}")).collect(),
        ('v' | 't', Arg::Bool(b)) => b.to_string(),
        ('v', Arg::Other(_, v)) => v.to_string(),
        _ => return bad(),
    };
    spec.pad(body)
}

fn hex(i: i64, upper: bool, sharp: bool) -> String {
    let digits = if upper {
        format!("{:X}", i.unsigned_abs())
    } else {
        format!("{:x}", i.unsigned_abs())
    };
    let prefix = if sharp {
        if upper { "0X" } else { "0x" }
    } else {
        ""
    };
    format!("{}{prefix}{digits}", if i < 0 { "-" } else { "" })
}

/// Go's `time.Time.String()` of a UTC instant in milliseconds:
/// `2006-01-02 15:04:05.999 +0000 UTC`, with the fraction's trailing zeros trimmed.
pub fn time_string(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let frac = ms.rem_euclid(1000);
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let (y, m, d) = crate::promql::civil(days);
    let mut out = format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    );
    if frac > 0 {
        let f = format!("{frac:03}");
        out.push('.');
        out.push_str(f.trim_end_matches('0'));
    }
    out.push_str(" +0000 UTC");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn floats_print_as_go_prints_them() {
        for (v, fmt, prec, want) in [
            (15.0, 'g', -1, "15"),
            (0.1, 'g', -1, "0.1"),
            (100000.0, 'g', -1, "100000"),
            (1234567.0, 'g', -1, "1.234567e+06"),
            (1e6, 'g', -1, "1e+06"),
            (0.00001, 'g', -1, "1e-05"),
            (0.0001, 'g', -1, "0.0001"),
            (0.0, 'g', -1, "0"),
            (-2.5, 'g', -1, "-2.5"),
            (1e21, 'g', -1, "1e+21"),
            (1.048576, 'g', 4, "1.049"),
            (1.5, 'g', 4, "1.5"),
            (100.0, 'g', 4, "100"),
            (12345.0, 'g', 4, "1.234e+04"),
            (1.0, 'g', 4, "1"),
            (95.89999999999999, 'g', 4, "95.9"),
            (0.0, 'g', 4, "0"),
            (f64::NAN, 'g', 4, "NaN"),
            (f64::INFINITY, 'g', -1, "+Inf"),
            (15.0, 'e', -1, "1.5e+01"),
            (1.0, 'e', 6, "1.000000e+00"),
            (1.23456, 'f', 2, "1.23"),
            (2.5, 'f', 0, "2"),
            (1e21, 'f', -1, "1000000000000000000000"),
            (0.000123, 'f', -1, "0.000123"),
        ] {
            assert_eq!(format_float(v, fmt, prec), want, "{v} {fmt} {prec}");
        }
    }

    #[test]
    fn printf_follows_go() {
        let f = |format: &str, args: &[Arg]| sprintf(format, args);
        assert_eq!(f("%.2f", &[Arg::Float(1.23456)]), "1.23");
        assert_eq!(
            f(
                "%5.1f|%-5d|%05d",
                &[Arg::Float(2.25), Arg::Int(7), Arg::Int(-42)]
            ),
            "  2.2|7    |-0042"
        );
        assert_eq!(f("%d", &[Arg::Float(1.5)]), "%!d(float64=1.5)");
        assert_eq!(f("%s %v", &[Arg::Str("a")]), "a %!v(MISSING)");
        assert_eq!(f("%s", &[Arg::Str("a"), Arg::Int(1)]), "a%!(EXTRA int=1)");
        assert_eq!(
            f(
                "%q %x %t %%",
                &[Arg::Str("a\"b"), Arg::Int(255), Arg::Bool(true)]
            ),
            "\"a\\\"b\" ff true %"
        );
        assert_eq!(
            f(
                "%v %g %+.3e",
                &[Arg::Float(1e6), Arg::Float(0.5), Arg::Float(12345.678)]
            ),
            "1e+06 0.5 +1.235e+04"
        );
        assert_eq!(
            sprint(&[Arg::Int(1), Arg::Int(2), Arg::Str("x"), Arg::Float(3.0)]),
            "1 2x3"
        );
        // Widths past fmt's limit are refused, not allocated.
        assert_eq!(f("%99999999999999999999d", &[Arg::Int(1)]), "%!(BADWIDTH)1");
        assert_eq!(f("%.2000000f", &[Arg::Float(1.0)]), "%!(BADPREC)1.000000");
    }

    #[test]
    fn times_print_as_go_prints_them() {
        assert_eq!(
            time_string(1_643_114_203_000),
            "2022-01-25 12:36:43 +0000 UTC"
        );
        assert_eq!(
            time_string(1_643_114_203_250),
            "2022-01-25 12:36:43.25 +0000 UTC"
        );
        assert_eq!(time_string(0), "1970-01-01 00:00:00 +0000 UTC");
        assert_eq!(time_string(-1000), "1969-12-31 23:59:59 +0000 UTC");
        assert_eq!(
            time_string(951_782_400_000),
            "2000-02-29 00:00:00 +0000 UTC"
        );
    }
}
