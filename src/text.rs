//! Text that must not attack whoever reads it. A task's strings end up in
//! terminals (grpcurl, `jct`, `git log`), log lines, editors and code review: a
//! control character can rewrite a terminal (ESC sequences, OSC 8 hyperlinks) or
//! forge a log line (newline), a bidi control can make code or a ref read
//! differently from what it is ("Trojan Source"), and an invisible character
//! makes two different names look equal.
//!
//! The intake refuses such text in every field a client or worker sends; the
//! worker escapes what it copies from a program before sending it. Both use the
//! rules here, so they cannot drift.

use std::fmt;

/// Why a character is not allowed in text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TextProblem {
    /// A C0 or C1 control character (NUL, ESC, CR, DEL, …), or a line or paragraph
    /// separator.
    Control(char),
    /// A newline or tab in a field that is a single line (an id, a key, a label).
    LineBreak(char),
    /// A Unicode bidirectional formatting character.
    Bidi(char),
    /// A character that renders as nothing (zero-width, word joiner, BOM, tag
    /// characters, fillers).
    Invisible(char),
}

impl fmt::Display for TextProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TextProblem::Control(c) => write!(
                f,
                "must not contain control characters (found {})",
                codepoint(*c)
            ),
            TextProblem::LineBreak(c) => write!(
                f,
                "must be a single line without tabs (found {})",
                codepoint(*c)
            ),
            TextProblem::Bidi(c) => write!(
                f,
                "must not contain bidirectional formatting characters (found {})",
                codepoint(*c)
            ),
            TextProblem::Invisible(c) => write!(
                f,
                "must not contain invisible characters (found {})",
                codepoint(*c)
            ),
        }
    }
}

/// `U+001B`: a character named so that the name itself is harmless.
pub fn codepoint(c: char) -> String {
    format!("U+{:04X}", u32::from(c))
}

/// Bidirectional formatting characters: the embeddings and overrides
/// (U+202A–U+202E), the isolates (U+2066–U+2069), and the implicit marks
/// (U+200E, U+200F, U+061C).
pub fn is_bidi_control(c: char) -> bool {
    matches!(c, '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}' | '\u{200E}' | '\u{200F}' | '\u{061C}')
}

/// Characters with no visible form that can hide inside a name or a sentence.
pub fn is_invisible(c: char) -> bool {
    matches!(
        c,
        '\u{00AD}'              // soft hyphen
        | '\u{034F}'            // combining grapheme joiner
        | '\u{115F}' | '\u{1160}' | '\u{3164}' | '\u{FFA0}' // Hangul fillers
        | '\u{180E}'            // Mongolian vowel separator
        | '\u{200B}'..='\u{200D}' // zero-width space, non-joiner, joiner
        | '\u{2060}'..='\u{2064}' // word joiner, invisible operators
        | '\u{206A}'..='\u{206F}' // deprecated format characters
        | '\u{FEFF}'            // zero-width no-break space (BOM)
        | '\u{FFF9}'..='\u{FFFB}' // interlinear annotations
        | '\u{E0000}'..='\u{E007F}' // tag characters ("ASCII smuggling")
    )
}

/// Control characters, including the Unicode line and paragraph separators that
/// some readers treat as newlines.
fn is_control(c: char) -> bool {
    c.is_control() || matches!(c, '\u{2028}' | '\u{2029}')
}

/// The first problem of free text (an objective, a message): newlines and tabs
/// are allowed, every other control, bidi and invisible character is not.
pub fn text_problem(text: &str) -> Option<TextProblem> {
    text.chars().find_map(|c| match c {
        '\n' | '\t' => None,
        c => char_problem(c),
    })
}

/// The first problem of single-line text (an id, a key, a label, a code): as
/// [`text_problem`], and no newline or tab either.
pub fn line_problem(text: &str) -> Option<TextProblem> {
    text.chars().find_map(|c| match c {
        '\n' | '\t' => Some(TextProblem::LineBreak(c)),
        c => char_problem(c),
    })
}

/// Why one character may not appear in any text, if it may not.
pub fn char_problem(c: char) -> Option<TextProblem> {
    if is_control(c) {
        Some(TextProblem::Control(c))
    } else if is_bidi_control(c) {
        Some(TextProblem::Bidi(c))
    } else if is_invisible(c) {
        Some(TextProblem::Invisible(c))
    } else {
        None
    }
}

/// `text` made safe to show: every character [`text_problem`] refuses, and the
/// backslash, written as `\u{…}` (a backslash as `\\`), so the result passes
/// [`text_problem`] and the original can be read back off it. Newlines and tabs
/// are kept.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' | '\t' => out.push(c),
            c if char_problem(c).is_some() => {
                out.push_str(&format!("\\u{{{:04x}}}", u32::from(c)));
            }
            c => out.push(c),
        }
    }
    out
}

/// Bytes a program wrote, as text safe to show: invalid UTF-8 becomes U+FFFD,
/// then [`escape`].
pub fn escape_bytes(bytes: &[u8]) -> String {
    escape(&String::from_utf8_lossy(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attacks_are_named() {
        assert_eq!(text_problem("a\0b"), Some(TextProblem::Control('\0')));
        assert_eq!(
            text_problem("\u{1b}[31mred"),
            Some(TextProblem::Control('\u{1b}'))
        );
        // OSC 8 hyperlink: ESC ] 8 ;; url ESC \ text ESC ] 8 ;; ESC \
        assert!(matches!(
            text_problem("\u{1b}]8;;https://evil\u{1b}\\click\u{1b}]8;;\u{1b}\\"),
            Some(TextProblem::Control(_))
        ));
        assert_eq!(text_problem("a\rb"), Some(TextProblem::Control('\r')));
        assert_eq!(
            text_problem("a\u{7f}"),
            Some(TextProblem::Control('\u{7f}'))
        );
        assert_eq!(
            text_problem("a\u{9b}"),
            Some(TextProblem::Control('\u{9b}'))
        );
        assert_eq!(
            text_problem("a\u{2028}"),
            Some(TextProblem::Control('\u{2028}'))
        );
        for bidi in [
            '\u{202A}', '\u{202E}', '\u{2066}', '\u{2069}', '\u{200E}', '\u{200F}', '\u{061C}',
        ] {
            assert_eq!(
                text_problem(&format!("main{bidi}")),
                Some(TextProblem::Bidi(bidi))
            );
        }
        for invisible in [
            '\u{200B}',
            '\u{200C}',
            '\u{200D}',
            '\u{2060}',
            '\u{FEFF}',
            '\u{E0041}',
            '\u{00AD}',
        ] {
            assert_eq!(
                text_problem(&format!("ma{invisible}in")),
                Some(TextProblem::Invisible(invisible))
            );
        }
    }

    #[test]
    fn ordinary_text_passes() {
        for text in [
            "Add a CONTRIBUTING guide",
            "line one\nline two\twith a tab",
            "Ünïcödé, 日本語, emoji 🚀 with a variation selector ❤\u{FE0F}",
            "arabic مرحبا and hebrew שלום are fine without controls",
            "",
        ] {
            assert_eq!(text_problem(text), None, "{text:?}");
        }
        assert_eq!(line_problem("worker-1.example"), None);
        assert_eq!(line_problem("a\nb"), Some(TextProblem::LineBreak('\n')));
        assert_eq!(line_problem("a\tb"), Some(TextProblem::LineBreak('\t')));
    }

    #[test]
    fn descriptions_name_the_character_harmlessly() {
        let description = TextProblem::Control('\u{1b}').to_string();
        assert!(description.contains("U+001B"), "{description}");
        assert_eq!(text_problem(&description), None);
    }

    #[test]
    fn escaping_makes_any_text_acceptable_and_is_reversible_in_spirit() {
        let hostile = "ok\0\u{1b}[2J\u{202E}evil\u{200B}\\path\nnext\r";
        let escaped = escape(hostile);
        assert_eq!(text_problem(&escaped), None, "{escaped}");
        assert_eq!(
            escaped,
            "ok\\u{0000}\\u{001b}[2J\\u{202e}evil\\u{200b}\\\\path\nnext\\u{000d}"
        );
        assert_eq!(escape("plain text\n"), "plain text\n");
        assert_eq!(
            text_problem(&escape_bytes(b"\xff\xfe\x00\x1b]8;;x\x07")),
            None
        );
    }

    /// A small deterministic fuzz loop: arbitrary bytes and arbitrary code points.
    #[test]
    fn escaped_random_text_always_passes() {
        let mut state = 0x9E37_79B9_7F4A_7C15_u64;
        let mut next = move || {
            // xorshift64*
            state ^= state >> 12;
            state ^= state << 25;
            state ^= state >> 27;
            state.wrapping_mul(0x2545_F491_4F6C_DD1D)
        };
        for _ in 0..5000 {
            let len = (next() % 64) as usize;
            let bytes: Vec<u8> = (0..len).map(|_| next() as u8).collect();
            assert_eq!(text_problem(&escape_bytes(&bytes)), None, "{bytes:?}");
            let text: String = (0..len)
                .filter_map(|_| char::from_u32((next() % 0x11_0000) as u32))
                .collect();
            let escaped = escape(&text);
            assert_eq!(text_problem(&escaped), None, "{text:?}");
            // nothing the rules allow is changed but the backslash
            if text_problem(&text).is_none() && !text.contains('\\') {
                assert_eq!(escaped, text);
            }
        }
    }
}
