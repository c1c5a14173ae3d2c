//! Opaque ListTasks page tokens: the id of the last task returned (pages are keyset
//! pages over time-ordered ids) bound to the filters they were made for, so a token
//! reused with other filters is refused instead of silently paging the wrong list.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use uuid::Uuid;

use crate::store::ListFilter;

const FORMAT_VERSION: u8 = 1;
const ENCODED_LEN: usize = 1 + 16 + 8;

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PageTokenError {
    #[error("the page token is malformed")]
    Malformed,
    #[error("the page token was issued for different filters")]
    FiltersChanged,
}

pub fn encode(last_id: Uuid, filter: &ListFilter) -> String {
    let mut bytes = Vec::with_capacity(ENCODED_LEN);
    bytes.push(FORMAT_VERSION);
    bytes.extend_from_slice(last_id.as_bytes());
    bytes.extend_from_slice(&filter_fingerprint(filter).to_be_bytes());
    URL_SAFE_NO_PAD.encode(bytes)
}

pub fn decode(token: &str, filter: &ListFilter) -> Result<Uuid, PageTokenError> {
    let bytes = URL_SAFE_NO_PAD
        .decode(token)
        .map_err(|_| PageTokenError::Malformed)?;
    if bytes.len() != ENCODED_LEN || bytes[0] != FORMAT_VERSION {
        return Err(PageTokenError::Malformed);
    }
    let id = Uuid::from_slice(&bytes[1..17]).map_err(|_| PageTokenError::Malformed)?;
    let mut fingerprint = [0u8; 8];
    fingerprint.copy_from_slice(&bytes[17..]);
    if u64::from_be_bytes(fingerprint) != filter_fingerprint(filter) {
        return Err(PageTokenError::FiltersChanged);
    }
    Ok(id)
}

/// FNV-1a over the filters: stable across processes and versions, unlike std's
/// hasher, so a token made by one replica works on another.
fn filter_fingerprint(filter: &ListFilter) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    let fields = [
        &filter.status,
        &filter.operation,
        &filter.requester_kind,
        &filter.target_repo,
    ];
    for field in fields {
        let bytes = match field {
            Some(value) => value.as_bytes(),
            None => &[0xff],
        };
        for byte in bytes.iter().chain(&[0u8]) {
            hash ^= u64::from(*byte);
            hash = hash.wrapping_mul(0x0100_0000_01b3);
        }
    }
    hash
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_under_the_same_filters_only() {
        let id = Uuid::now_v7();
        let filter = ListFilter {
            status: Some("queued".into()),
            ..Default::default()
        };
        let token = encode(id, &filter);
        assert_eq!(decode(&token, &filter), Ok(id));
        assert_eq!(
            decode(&token, &ListFilter::default()),
            Err(PageTokenError::FiltersChanged)
        );
        assert_eq!(
            decode("not a token!", &filter),
            Err(PageTokenError::Malformed)
        );
        assert_eq!(
            decode(&token[..10], &filter),
            Err(PageTokenError::Malformed)
        );
    }
}
