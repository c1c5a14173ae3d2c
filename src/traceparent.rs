//! W3C Trace Context `traceparent` values (<https://www.w3.org/TR/trace-context/>):
//! `00-<32 hex trace id>-<16 hex parent id>-<2 hex flags>`. The intake stores one
//! with every task and the worker makes its run span a child of it, so a task's
//! enqueue and its run are one trace.
//!
//! Parsing is strict (version 00 only, lowercase hex, ids not all zero): a value
//! that is not exactly right is treated as absent, and the intake makes a fresh
//! one instead of failing the Enqueue.

use std::fmt;

/// The `traceparent` gRPC metadata key (what OpenTelemetry propagators send).
pub const HEADER: &str = "traceparent";

/// The sampled flag: the caller records this trace.
pub const SAMPLED: u8 = 0x01;

/// A parsed `traceparent`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Traceparent {
    pub trace_id: [u8; 16],
    pub parent_id: [u8; 8],
    pub flags: u8,
}

impl Traceparent {
    /// A new root: the given random ids, sampled. `None` when an id is all zero
    /// (invalid by the spec).
    pub fn new(trace_id: [u8; 16], parent_id: [u8; 8]) -> Option<Traceparent> {
        let made = Traceparent {
            trace_id,
            parent_id,
            flags: SAMPLED,
        };
        made.is_valid().then_some(made)
    }

    /// Parses a version-00 `traceparent`; `None` for anything else.
    pub fn parse(text: &str) -> Option<Traceparent> {
        // version 00 has exactly this shape; later versions may append fields,
        // but they are not ours to guess at
        let bytes = text.as_bytes();
        if bytes.len() != 55 || bytes[2] != b'-' || bytes[35] != b'-' || bytes[52] != b'-' {
            return None;
        }
        let [version] = hex_bytes::<1>(&bytes[0..2])?;
        if version != 0 {
            return None;
        }
        let parsed = Traceparent {
            trace_id: hex_bytes(&bytes[3..35])?,
            parent_id: hex_bytes(&bytes[36..52])?,
            flags: hex_bytes::<1>(&bytes[53..55])?[0],
        };
        parsed.is_valid().then_some(parsed)
    }

    /// The trace id as 32 lowercase hex digits.
    pub fn trace_id_hex(&self) -> String {
        hex(&self.trace_id)
    }

    /// The parent (span) id as 16 lowercase hex digits.
    pub fn parent_id_hex(&self) -> String {
        hex(&self.parent_id)
    }

    pub fn is_sampled(&self) -> bool {
        self.flags & SAMPLED != 0
    }

    fn is_valid(&self) -> bool {
        self.trace_id != [0; 16] && self.parent_id != [0; 8]
    }
}

impl fmt::Display for Traceparent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "00-{}-{}-{:02x}",
            self.trace_id_hex(),
            self.parent_id_hex(),
            self.flags
        )
    }
}

/// `N` bytes from exactly `2N` lowercase hex digits (the spec forbids uppercase).
fn hex_bytes<const N: usize>(digits: &[u8]) -> Option<[u8; N]> {
    if digits.len() != 2 * N {
        return None;
    }
    let mut out = [0u8; N];
    for (byte, pair) in out.iter_mut().zip(digits.chunks_exact(2)) {
        *byte = (nibble(pair[0])? << 4) | nibble(pair[1])?;
    }
    Some(out)
}

fn nibble(digit: u8) -> Option<u8> {
    match digit {
        b'0'..=b'9' => Some(digit - b'0'),
        b'a'..=b'f' => Some(digit - b'a' + 10),
        _ => None,
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn the_spec_example_round_trips() {
        let parsed = Traceparent::parse(EXAMPLE).expect("valid");
        assert_eq!(parsed.trace_id_hex(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(parsed.parent_id_hex(), "00f067aa0ba902b7");
        assert!(parsed.is_sampled());
        assert_eq!(parsed.to_string(), EXAMPLE);
        let unsampled = Traceparent::parse(&EXAMPLE.replace("-01", "-00")).expect("valid");
        assert!(!unsampled.is_sampled());
    }

    #[test]
    fn anything_not_exactly_version_00_is_refused() {
        for bad in [
            "",
            "garbage",
            // version ff is forbidden; other versions are not ours to parse
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            // all-zero ids
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            // uppercase, short, long, wrong separators, non-hex
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-",
            "00-4bf92f3577b34da6a3ce929d0e0e4736_00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e47zz-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0g",
            " 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            // multi-byte text of the right length must not split a character
            "00-4bf92f3577b34da6a3ce929d0e0e47é-00f067aa0ba902b7-01",
        ] {
            assert_eq!(Traceparent::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn new_roots_are_sampled_and_never_all_zero() {
        let made = Traceparent::new([7; 16], [9; 8]).expect("valid");
        assert!(made.is_sampled());
        assert_eq!(Traceparent::parse(&made.to_string()), Some(made));
        assert_eq!(Traceparent::new([0; 16], [9; 8]), None);
        assert_eq!(Traceparent::new([7; 16], [0; 8]), None);
    }
}
