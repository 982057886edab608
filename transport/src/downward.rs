//! The Kubernetes downward-API volume format: one `key="value"` per line, the value
//! quoted with Go's `%q` escaping (`\"`, `\\`, `\n`, `\t`, `\xNN`, `\uNNNN`, …).

/// A line that is not `key="value"`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {reason}: {text:?}")]
pub struct LineError {
    pub line: usize,
    pub reason: &'static str,
    pub text: String,
}

/// The pairs of a labels or annotations file, and the lines that could not be read
/// (reported, skipped; the rest is still used).
pub fn parse(text: &str) -> (Vec<(String, String)>, Vec<LineError>) {
    let mut pairs = Vec::new();
    let mut errors = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        match parse_line(line) {
            Ok(p) => pairs.push(p),
            Err(reason) => errors.push(LineError {
                line: i + 1,
                reason,
                text: line.chars().take(120).collect(),
            }),
        }
    }
    (pairs, errors)
}

fn parse_line(line: &str) -> Result<(String, String), &'static str> {
    let (key, rest) = line.split_once('=').ok_or("expected key=\"value\"")?;
    if key.is_empty() || key.chars().any(char::is_whitespace) {
        return Err("invalid key");
    }
    let quoted = rest.strip_prefix('"').ok_or("value is not quoted")?;
    let mut out = String::new();
    let mut chars = quoted.chars();
    loop {
        match chars.next() {
            None => return Err("unterminated value"),
            Some('"') => break,
            Some('\\') => match chars.next() {
                Some('n') => out.push('\n'),
                Some('t') => out.push('\t'),
                Some('r') => out.push('\r'),
                Some('\\') => out.push('\\'),
                Some('"') => out.push('"'),
                Some('\'') => out.push('\''),
                Some('a') => out.push('\u{7}'),
                Some('b') => out.push('\u{8}'),
                Some('f') => out.push('\u{c}'),
                Some('v') => out.push('\u{b}'),
                Some(c @ ('x' | 'u' | 'U')) => {
                    let n = match c {
                        'x' => 2,
                        'u' => 4,
                        _ => 8,
                    };
                    let hex: String = chars.by_ref().take(n).collect();
                    let code = u32::from_str_radix(&hex, 16).map_err(|_| "invalid escape")?;
                    if c == 'x' {
                        // A raw byte; in labels these are always ASCII.
                        out.push(char::from_u32(code).ok_or("invalid escape")?);
                    } else {
                        out.push(char::from_u32(code).ok_or("invalid escape")?);
                    }
                }
                _ => return Err("invalid escape"),
            },
            Some(c) => out.push(c),
        }
    }
    if !chars.as_str().trim().is_empty() {
        return Err("text after the closing quote");
    }
    Ok((key.to_string(), out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_escaped_values() {
        let text = "app=\"checkout\"\npod-template-hash=\"7d9f8b6c5\"\nnote=\"say \\\"hi\\\"\\nbye \\u00e9\\\\\"\n\n";
        let (pairs, errors) = parse(text);
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(
            pairs,
            vec![
                ("app".into(), "checkout".into()),
                ("pod-template-hash".into(), "7d9f8b6c5".into()),
                ("note".into(), "say \"hi\"\nbye é\\".into()),
            ]
        );
    }

    #[test]
    fn empty_files_and_garbage() {
        assert_eq!(parse(""), (Vec::new(), Vec::new()));
        let (pairs, errors) = parse("good=\"1\"\ngarbage line\nbad=unquoted\nopen=\"x\n=\"v\"\n");
        assert_eq!(pairs, vec![("good".into(), "1".into())]);
        let reasons: Vec<(usize, &str)> = errors.iter().map(|e| (e.line, e.reason)).collect();
        assert_eq!(
            reasons,
            vec![
                (2, "expected key=\"value\""),
                (3, "value is not quoted"),
                (4, "unterminated value"),
                (5, "invalid key"),
            ]
        );
    }
}
