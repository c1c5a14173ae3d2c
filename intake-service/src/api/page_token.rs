//! Opaque ListTasks page tokens: the id of the last task returned (pages are keyset
//! pages over time-ordered ids) with an HMAC over that id, the caller and the
//! filters. A token reused with other filters, borrowed by another caller, or
//! forged is refused instead of paging a list the caller did not ask for.
//!
//! The key comes from `JCT_PAGE_TOKEN_KEY_FILE` (replicas behind one address share
//! it) or is drawn at start (tokens then hold on the intake that made them).

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, KeyInit, Mac};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::store::ListFilter;

const FORMAT_VERSION: u8 = 2;
const TAG_LEN: usize = 16;
const ENCODED_LEN: usize = 1 + 16 + TAG_LEN;

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PageTokenError {
    #[error("the page token is malformed")]
    Malformed,
    #[error("the page token was not issued to this caller for these filters")]
    NotIssuedForThis,
}

/// Makes and checks page tokens with one key.
#[derive(Clone)]
pub struct PageTokens {
    /// 32 secret bytes, zero-padded to SHA-256's block (as HMAC pads any key).
    key: [u8; 64],
}

impl PageTokens {
    /// A key derived from secret bytes (e.g. a mounted file's content).
    pub fn from_secret(secret: &[u8]) -> Self {
        Self::with_key(Sha256::digest(secret).into())
    }

    /// A key for this process only.
    pub fn random() -> Self {
        Self::with_key(rand::random())
    }

    fn with_key(secret: [u8; 32]) -> Self {
        let mut key = [0u8; 64];
        key[..32].copy_from_slice(&secret);
        Self { key }
    }

    pub fn encode(&self, last_id: Uuid, caller: &str, filter: &ListFilter) -> String {
        let mut bytes = Vec::with_capacity(ENCODED_LEN);
        bytes.push(FORMAT_VERSION);
        bytes.extend_from_slice(last_id.as_bytes());
        bytes.extend_from_slice(&self.tag(last_id, caller, filter)[..TAG_LEN]);
        URL_SAFE_NO_PAD.encode(bytes)
    }

    pub fn decode(
        &self,
        token: &str,
        caller: &str,
        filter: &ListFilter,
    ) -> Result<Uuid, PageTokenError> {
        let bytes = URL_SAFE_NO_PAD
            .decode(token)
            .map_err(|_| PageTokenError::Malformed)?;
        if bytes.len() != ENCODED_LEN || bytes[0] != FORMAT_VERSION {
            return Err(PageTokenError::Malformed);
        }
        let id = Uuid::from_slice(&bytes[1..17]).map_err(|_| PageTokenError::Malformed)?;
        self.mac(id, caller, filter)
            .verify_truncated_left(&bytes[17..])
            .map_err(|_| PageTokenError::NotIssuedForThis)?;
        Ok(id)
    }

    fn tag(&self, last_id: Uuid, caller: &str, filter: &ListFilter) -> Vec<u8> {
        self.mac(last_id, caller, filter)
            .finalize()
            .into_bytes()
            .to_vec()
    }

    fn mac(&self, last_id: Uuid, caller: &str, filter: &ListFilter) -> Hmac<Sha256> {
        let mut mac = <Hmac<Sha256> as KeyInit>::new(&self.key.into());
        mac.update(&[FORMAT_VERSION]);
        mac.update(last_id.as_bytes());
        let fields = [
            Some(caller),
            filter.submitted_by.as_deref(),
            filter.status.as_deref(),
            filter.operation.as_deref(),
            filter.requester_kind.as_deref(),
            filter.target_repo.as_deref(),
        ];
        // length-prefixed, so no two field lists encode alike
        for field in fields {
            match field {
                Some(value) => {
                    mac.update(&[1]);
                    mac.update(&(value.len() as u64).to_be_bytes());
                    mac.update(value.as_bytes());
                }
                None => mac.update(&[0]),
            }
        }
        mac
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_for_the_same_caller_and_filters_only() {
        let tokens = PageTokens::random();
        let id = Uuid::now_v7();
        let filter = ListFilter {
            status: Some("queued".into()),
            ..Default::default()
        };
        let token = tokens.encode(id, "alice", &filter);
        assert_eq!(tokens.decode(&token, "alice", &filter), Ok(id));
        assert_eq!(
            tokens.decode(&token, "alice", &ListFilter::default()),
            Err(PageTokenError::NotIssuedForThis)
        );
        assert_eq!(
            tokens.decode(&token, "bob", &filter),
            Err(PageTokenError::NotIssuedForThis)
        );
        assert_eq!(
            PageTokens::random().decode(&token, "alice", &filter),
            Err(PageTokenError::NotIssuedForThis),
            "another key"
        );
        assert_eq!(
            PageTokens::from_secret(b"k").encode(id, "alice", &filter),
            PageTokens::from_secret(b"k").encode(id, "alice", &filter),
            "replicas sharing a key agree"
        );
        assert_eq!(
            tokens.decode("not a token!", "alice", &filter),
            Err(PageTokenError::Malformed)
        );
        assert_eq!(
            tokens.decode(&token[..10], "alice", &filter),
            Err(PageTokenError::Malformed)
        );
    }

    #[test]
    fn a_forged_token_for_another_position_is_refused() {
        let tokens = PageTokens::random();
        let filter = ListFilter::default();
        let token = tokens.encode(Uuid::now_v7(), "alice", &filter);
        let mut bytes = URL_SAFE_NO_PAD.decode(&token).expect("b64");
        bytes[5] ^= 1;
        let forged = URL_SAFE_NO_PAD.encode(bytes);
        assert_eq!(
            tokens.decode(&forged, "alice", &filter),
            Err(PageTokenError::NotIssuedForThis)
        );
    }
}
