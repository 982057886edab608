//! Timestamps in log lines: RFC 3339 (Docker, CRI), `strptime` layouts (the common
//! directives) and epoch numbers, to Unix nanoseconds.

/// How a `timestamp:` block reads its field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Layout {
    /// `%Y-%m-%dT%H:%M:%S%z`-style directives.
    Strptime(String),
    /// `s`, `ms`, `us`, `ns`, `s.ms`, `s.us`, `s.ns`.
    Epoch(String),
}

impl Layout {
    /// Checks a layout as configured; `layout_type` is `strptime` (default) or `epoch`.
    pub fn new(layout_type: Option<&str>, layout: &str) -> Result<Layout, String> {
        match layout_type.unwrap_or("strptime") {
            "strptime" => {
                let mut chars = layout.chars();
                while let Some(c) = chars.next() {
                    if c == '%' {
                        match chars.next() {
                            Some(
                                'Y' | 'm' | 'd' | 'H' | 'M' | 'S' | 'f' | 'L' | 's' | 'z' | 'Z'
                                | 'b' | 'e' | 'y' | 'j' | 'p' | 'I' | 'T' | 'F' | '%',
                            ) => {}
                            Some(d) => return Err(format!("strptime directive %{d} is not supported: use %Y %m %d %H %M %S %f %L %z %Z %b %e %y %j %I %p %T %F %s")),
                            None => return Err("the layout ends with a lone %".into()),
                        }
                    }
                }
                Ok(Layout::Strptime(layout.to_string()))
            }
            "epoch" => match layout {
                "s" | "ms" | "us" | "ns" | "s.ms" | "s.us" | "s.ns" => {
                    Ok(Layout::Epoch(layout.to_string()))
                }
                other => Err(format!(
                    "epoch layout \"{other}\" is not one of s, ms, us, ns, s.ms, s.us, s.ns"
                )),
            },
            "gotime" => Err("layout_type gotime is not supported: write the layout as strptime (e.g. %Y-%m-%dT%H:%M:%S%z)".into()),
            other => Err(format!(
                "unknown layout_type \"{other}\": write strptime or epoch"
            )),
        }
    }

    /// The Unix time in nanoseconds `text` stands for under this layout.
    pub fn parse(&self, text: &str) -> Option<u64> {
        match self {
            Layout::Strptime(l) => strptime(text.trim(), l),
            Layout::Epoch(unit) => epoch(text.trim(), unit),
        }
    }
}

fn epoch(text: &str, unit: &str) -> Option<u64> {
    let scale: f64 = match unit {
        "s" | "s.ms" | "s.us" | "s.ns" => 1e9,
        "ms" => 1e6,
        "us" => 1e3,
        _ => 1.0,
    };
    if let Ok(n) = text.parse::<u64>() {
        return n.checked_mul(scale as u64);
    }
    let f: f64 = text.parse().ok()?;
    (f.is_finite() && f >= 0.0).then_some((f * scale) as u64)
}

/// Days since 1970-01-01 of a proleptic Gregorian date.
pub fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (i64::from(m) + 9) % 12;
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// RFC 3339 with any number of fraction digits: `2024-05-01T12:00:00.123456789Z`,
/// `2024-05-01T14:00:00+02:00`.
pub fn rfc3339(text: &str) -> Option<u64> {
    strptime(text, "%Y-%m-%dT%H:%M:%S%f%z")
}

/// Reads digits: at most `max`, at least one.
fn digits(s: &[u8], i: &mut usize, max: usize) -> Option<i64> {
    let start = *i;
    let mut v: i64 = 0;
    while *i < s.len() && *i - start < max && s[*i].is_ascii_digit() {
        v = v * 10 + i64::from(s[*i] - b'0');
        *i += 1;
    }
    (*i > start).then_some(v)
}

const MONTHS: [&str; 12] = [
    "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
];

fn strptime(text: &str, layout: &str) -> Option<u64> {
    let s = text.as_bytes();
    let l = layout.as_bytes();
    let (mut year, mut month, mut day) = (1970i64, 1u32, 1u32);
    let (mut hour, mut min, mut sec, mut nanos) = (0i64, 0i64, 0i64, 0i64);
    let mut offset_s: i64 = 0;
    let mut yday: Option<i64> = None;
    let mut pm: Option<bool> = None;
    let mut epoch_s: Option<i64> = None;
    let (mut i, mut j) = (0usize, 0usize);
    while j < l.len() {
        if l[j] != b'%' {
            if s.get(i) != Some(&l[j]) {
                return None;
            }
            i += 1;
            j += 1;
            continue;
        }
        let d = *l.get(j + 1)?;
        j += 2;
        match d {
            b'Y' => year = digits(s, &mut i, 4)?,
            b'y' => year = 2000 + digits(s, &mut i, 2)?,
            b'm' => month = digits(s, &mut i, 2)? as u32,
            b'd' => day = digits(s, &mut i, 2)? as u32,
            b'e' => {
                if s.get(i) == Some(&b' ') {
                    i += 1;
                }
                day = digits(s, &mut i, 2)? as u32;
            }
            b'j' => yday = Some(digits(s, &mut i, 3)?),
            b'H' | b'I' => hour = digits(s, &mut i, 2)?,
            b'M' => min = digits(s, &mut i, 2)?,
            b'S' => sec = digits(s, &mut i, 2)?,
            b'T' => {
                hour = digits(s, &mut i, 2)?;
                (s.get(i) == Some(&b':')).then_some(())?;
                i += 1;
                min = digits(s, &mut i, 2)?;
                (s.get(i) == Some(&b':')).then_some(())?;
                i += 1;
                sec = digits(s, &mut i, 2)?;
            }
            b'F' => {
                year = digits(s, &mut i, 4)?;
                (s.get(i) == Some(&b'-')).then_some(())?;
                i += 1;
                month = digits(s, &mut i, 2)? as u32;
                (s.get(i) == Some(&b'-')).then_some(())?;
                i += 1;
                day = digits(s, &mut i, 2)? as u32;
            }
            // An optional fraction, with or without its dot or comma.
            b'f' | b'L' => {
                if matches!(s.get(i), Some(b'.' | b',')) {
                    i += 1;
                }
                let start = i;
                let v = digits(s, &mut i, 9).unwrap_or(0);
                let n = i - start;
                nanos = v * 10i64.pow(9 - n as u32);
                while s.get(i).is_some_and(u8::is_ascii_digit) {
                    i += 1;
                }
            }
            b's' => epoch_s = Some(digits(s, &mut i, 12)?),
            b'b' => {
                let word = s.get(i..i + 3)?;
                let m = MONTHS
                    .iter()
                    .position(|m| word.eq_ignore_ascii_case(m.as_bytes()))?;
                month = m as u32 + 1;
                i += 3;
                // A full month name.
                while s.get(i).is_some_and(u8::is_ascii_alphabetic) {
                    i += 1;
                }
            }
            b'p' => {
                let word = s.get(i..i + 2)?;
                pm = Some(word.eq_ignore_ascii_case(b"pm"));
                (word.eq_ignore_ascii_case(b"am") || word.eq_ignore_ascii_case(b"pm"))
                    .then_some(())?;
                i += 2;
            }
            b'z' | b'Z' => match s.get(i) {
                Some(b'Z' | b'z') => i += 1,
                Some(&sign @ (b'+' | b'-')) => {
                    i += 1;
                    let h = digits(s, &mut i, 2)?;
                    if s.get(i) == Some(&b':') {
                        i += 1;
                    }
                    let m = digits(s, &mut i, 2).unwrap_or(0);
                    offset_s = (h * 3600 + m * 60) * if sign == b'-' { -1 } else { 1 };
                }
                _ if d == b'Z' => {
                    // A zone name such as UTC or GMT: taken as UTC.
                    while s.get(i).is_some_and(u8::is_ascii_alphabetic) {
                        i += 1;
                    }
                }
                _ => return None,
            },
            b'%' => {
                (s.get(i) == Some(&b'%')).then_some(())?;
                i += 1;
            }
            _ => return None,
        }
    }
    if i != s.len() {
        return None;
    }
    if let Some(e) = epoch_s {
        return u64::try_from(e).ok()?.checked_mul(1_000_000_000);
    }
    if let Some(p) = pm {
        hour = hour % 12 + if p { 12 } else { 0 };
    }
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || hour > 23 || min > 59 || sec > 60 {
        return None;
    }
    let days = match yday {
        Some(n) => days_from_civil(year, 1, 1) + n - 1,
        None => days_from_civil(year, month, day),
    };
    let secs = days * 86_400 + hour * 3600 + min * 60 + sec - offset_s;
    u64::try_from(secs)
        .ok()?
        .checked_mul(1_000_000_000)?
        .checked_add(nanos as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_and_layouts() {
        assert_eq!(rfc3339("1970-01-01T00:00:01Z"), Some(1_000_000_000));
        assert_eq!(
            rfc3339("2024-05-01T12:00:00.123456789Z"),
            Some(1_714_564_800_123_456_789)
        );
        assert_eq!(
            rfc3339("2024-05-01T14:00:00.5+02:00"),
            Some(1_714_564_800_500_000_000)
        );
        assert_eq!(rfc3339("2024-05-01 12:00:00Z"), None);
        assert_eq!(rfc3339("garbage"), None);
        let l = Layout::new(None, "%d/%b/%Y:%H:%M:%S %z").unwrap();
        // The NGINX access-log time.
        assert_eq!(
            l.parse("01/May/2024:14:00:00 +0200"),
            Some(1_714_564_800_000_000_000)
        );
        let l = Layout::new(Some("strptime"), "%Y-%m-%d %I:%M:%S %p").unwrap();
        assert_eq!(
            l.parse("2024-05-01 12:00:00 PM"),
            Some(1_714_564_800_000_000_000)
        );
        let e = Layout::new(Some("epoch"), "ms").unwrap();
        assert_eq!(e.parse("1714564800123"), Some(1_714_564_800_123_000_000));
        let e = Layout::new(Some("epoch"), "s.ms").unwrap();
        assert_eq!(e.parse("1714564800.5"), Some(1_714_564_800_500_000_000));
        assert!(Layout::new(Some("gotime"), "2006").is_err());
        assert!(Layout::new(None, "%Q").is_err());
        assert!(Layout::new(Some("epoch"), "minutes").is_err());
    }
}
