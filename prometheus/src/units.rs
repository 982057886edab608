//! UCUM units (OpenTelemetry's) and the words Prometheus names carry for them, both ways.

/// UCUM units and the Prometheus unit words for them (plural, as in `_seconds`).
pub const UNITS: &[(&str, &str)] = &[
    ("d", "days"),
    ("h", "hours"),
    ("min", "minutes"),
    ("s", "seconds"),
    ("ms", "milliseconds"),
    ("us", "microseconds"),
    ("ns", "nanoseconds"),
    ("By", "bytes"),
    ("KiBy", "kibibytes"),
    ("MiBy", "mebibytes"),
    ("GiBy", "gibibytes"),
    ("TiBy", "tebibytes"),
    ("kBy", "kilobytes"),
    ("KBy", "kilobytes"),
    ("MBy", "megabytes"),
    ("GBy", "gigabytes"),
    ("TBy", "terabytes"),
    ("m", "meters"),
    ("V", "volts"),
    ("A", "amperes"),
    ("J", "joules"),
    ("W", "watts"),
    ("g", "grams"),
    ("Cel", "celsius"),
    ("Hz", "hertz"),
    ("%", "percent"),
    ("1", "ratio"),
];

/// The UCUM unit for a Prometheus unit word (`seconds` → `s`).
pub fn ucum_for_word(word: &str) -> Option<&'static str> {
    UNITS.iter().find(|(_, w)| *w == word).map(|(u, _)| *u)
}

/// The Prometheus unit word for a UCUM unit (`s` → `seconds`).
pub fn word_for_ucum(unit: &str) -> Option<&'static str> {
    UNITS.iter().find(|(u, _)| *u == unit).map(|(_, w)| *w)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units_go_both_ways() {
        assert_eq!(ucum_for_word("seconds"), Some("s"));
        assert_eq!(word_for_ucum("s"), Some("seconds"));
        assert_eq!(ucum_for_word("kilobytes"), Some("kBy"));
        assert_eq!(word_for_ucum("KBy"), Some("kilobytes"));
        assert_eq!(ucum_for_word("fortnights"), None);
    }
}
