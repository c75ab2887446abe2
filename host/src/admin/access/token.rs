//! The admin API's bearer token: read once from `[admin] token_file`, compared in a time that
//! does not leak it, taken from `Authorization: Bearer`.

use std::io::Read;
use std::path::Path;
use std::sync::Arc;

use axum::http::{header, HeaderMap};

use super::AdminAccessError;

/// The longest token file read: a token is a line, not a document.
const MAX_TOKEN_BYTES: u64 = 4096;

/// The bearer token of the admin API, read once at start. Never shown, not even by `Debug`.
#[derive(Clone)]
pub struct AdminToken(Arc<[u8]>);

impl std::fmt::Debug for AdminToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AdminToken(…)")
    }
}

impl AdminToken {
    /// Reads a token file: trimmed, at most 4 KiB, printable ASCII without spaces (what an
    /// `Authorization` header carries; `openssl rand -hex 32` makes one).
    pub fn read(path: &Path) -> Result<Self, AdminAccessError> {
        let err = |reason: String| AdminAccessError::TokenFile {
            path: path.to_owned(),
            reason,
        };
        let mut bytes = Vec::new();
        std::fs::File::open(path)
            .and_then(|f| f.take(MAX_TOKEN_BYTES + 1).read_to_end(&mut bytes))
            .map_err(|e| err(format!("cannot read it: {e}")))?;
        if bytes.len() as u64 > MAX_TOKEN_BYTES {
            return Err(err(format!("larger than {MAX_TOKEN_BYTES} bytes")));
        }
        AdminToken::new(&bytes).map_err(err)
    }

    /// A token from its text, trimmed.
    pub fn new(token: &[u8]) -> Result<Self, String> {
        let token = token.trim_ascii();
        if token.is_empty() {
            return Err("it is empty".into());
        }
        if !token.iter().all(u8::is_ascii_graphic) {
            return Err("a token is printable ASCII without spaces".into());
        }
        Ok(AdminToken(token.into()))
    }

    /// Whether `offered` is the token, in a time that depends on `offered`'s length only.
    pub(super) fn matches(&self, offered: &[u8]) -> bool {
        let secret = &self.0;
        let mut diff = u8::from(offered.len() != secret.len());
        for (i, b) in offered.iter().enumerate() {
            diff |= b ^ secret[i % secret.len()];
        }
        std::hint::black_box(diff) == 0
    }
}

/// The credentials of `Authorization: Bearer <token>`.
pub(super) fn bearer(headers: &HeaderMap) -> Option<&[u8]> {
    let value = headers.get(header::AUTHORIZATION)?.as_bytes();
    let space = value.iter().position(|b| *b == b' ')?;
    let (scheme, credentials) = value.split_at(space);
    scheme
        .eq_ignore_ascii_case(b"bearer")
        .then(|| credentials.trim_ascii())
}
