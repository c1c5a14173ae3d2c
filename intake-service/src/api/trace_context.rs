//! The trace context a new task is stored with: the W3C `traceparent` the
//! enqueuing client sent as gRPC metadata, or a fresh sampled root when it sent
//! none or one that does not parse. A bad header never fails the Enqueue: tracing
//! is the caller's convenience, not part of the request.

use jct::traceparent::{self, Traceparent};
use tonic::metadata::MetadataMap;

/// The caller's `traceparent`, when it sent exactly one valid value.
pub fn from_caller(metadata: &MetadataMap) -> Option<Traceparent> {
    let mut values = metadata.get_all(traceparent::HEADER).iter();
    let first = values.next()?;
    // the spec: more than one traceparent header means none is trustworthy
    if values.next().is_some() {
        return None;
    }
    Traceparent::parse(first.to_str().ok()?)
}

/// A new root trace: random ids, sampled.
pub fn fresh() -> Traceparent {
    loop {
        // all-zero ids are invalid; drawing one is a 2^-64 event, but cheap to redo
        if let Some(made) = Traceparent::new(rand::random(), rand::random()) {
            return made;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    fn metadata(values: &[&str]) -> MetadataMap {
        let mut map = MetadataMap::new();
        for value in values {
            map.append(traceparent::HEADER, value.parse().expect("ascii"));
        }
        map
    }

    #[test]
    fn a_valid_header_is_taken_as_sent() {
        let parsed = from_caller(&metadata(&[SENT])).expect("valid");
        assert_eq!(parsed.to_string(), SENT);
    }

    #[test]
    fn missing_invalid_or_repeated_headers_are_ignored() {
        assert_eq!(from_caller(&metadata(&[])), None);
        assert_eq!(from_caller(&metadata(&["00-zz"])), None);
        assert_eq!(from_caller(&metadata(&[SENT, SENT])), None);
    }

    #[test]
    fn fresh_roots_differ_and_parse() {
        let (a, b) = (fresh(), fresh());
        assert_ne!(a.trace_id, b.trace_id);
        assert!(a.is_sampled());
        assert_eq!(Traceparent::parse(&a.to_string()), Some(a));
    }
}
