//! Console text helpers: a record body into clean lines (header parsing and ncfrag
//! reassembly are relay-core's [`relay_core::netconsole`]).
use relay_core::netconsole::escape::Unescape;

/// The message text of a body (before the dictionary), unescaped, split into lines.
pub fn body_lines(body: &[u8], max_line: usize, out: &mut Vec<String>) {
    let text = body.split(|&b| b == b'\n').next().unwrap_or_default();
    // printk escapes control bytes (an embedded newline is `\x0a`); a malformed escape ends
    // the text there, as the kernel never produces one.
    let raw: std::borrow::Cow<'_, [u8]> = if text.contains(&b'\\') {
        Unescape::new(text).map_while(Result::ok).collect::<Vec<u8>>().into()
    } else {
        text.into() // the common case: nothing escaped, nothing to copy
    };
    for piece in raw.split(|&b| b == b'\n') {
        out.push(clean_line(piece, max_line));
    }
}

/// Lossy UTF-8, control characters (ANSI escapes, CR, NUL) removed, length capped.
pub fn clean_line(bytes: &[u8], max_line: usize) -> String {
    let mut s = String::from_utf8_lossy(bytes.get(..max_line.min(bytes.len())).unwrap_or(bytes)).into_owned();
    if s.bytes().any(|b| b < 0x20 && b != b'\t') {
        s = strip_controls(&s);
    }
    s
}

fn strip_controls(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // CSI: ESC [ params final-byte
            if chars.peek() == Some(&'[') {
                chars.next();
                for n in chars.by_ref() {
                    if ('@'..='~').contains(&n) {
                        break;
                    }
                }
            }
        } else if (c as u32) >= 0x20 || c == '\t' {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unescapes_and_splits() {
        let mut out = Vec::new();
        body_lines(b"a ->\\x0asecond \\x5c end\n SUBSYSTEM=x\n", 100, &mut out);
        assert_eq!(out, ["a ->", "second \\ end"]);
    }
}
