//! Streaming decoding: text out as soon as whole UTF-8 characters are in.

use crate::{Tokenizer, TokenizerError};

/// Decodes ids one at a time, returning only complete UTF-8 characters.
///
/// Tokens may end in the middle of a character (World tokens are arbitrary bytes, e.g. half of a
/// CJK character or an emoji). The unfinished tail, at most 3 bytes, is held back until the
/// following bytes complete it. Bytes that can never become valid UTF-8 (a stray continuation
/// byte, a lead byte followed by a non-continuation byte, an overlong or surrogate encoding) are
/// emitted as U+FFFD as soon as that is certain, one replacement per maximal invalid subpart, the
/// same as [`String::from_utf8_lossy`]; so the decoder never stalls, and
/// `push(a) + push(b) + ... + finish()` equals `from_utf8_lossy(decode([a, b, ...]))`.
#[derive(Debug, Clone)]
pub struct StreamDecoder<'a> {
    tokenizer: &'a Tokenizer,
    pending: Vec<u8>,
}

impl<'a> StreamDecoder<'a> {
    pub fn new(tokenizer: &'a Tokenizer) -> StreamDecoder<'a> {
        StreamDecoder {
            tokenizer,
            pending: Vec::new(),
        }
    }

    /// Adds one token; returns the text it completes (possibly empty). An unknown id is an error
    /// and leaves the decoder unchanged.
    pub fn push(&mut self, id: u32) -> Result<String, TokenizerError> {
        let bytes = self.tokenizer.token_bytes_or_err(id)?;
        self.pending.extend_from_slice(bytes);
        let mut out = String::new();
        let mut start = 0;
        loop {
            match std::str::from_utf8(&self.pending[start..]) {
                Ok(s) => {
                    out.push_str(s);
                    start = self.pending.len();
                    break;
                }
                Err(e) => {
                    let valid = start + e.valid_up_to();
                    // Cannot fail: the prefix up to `valid_up_to` is valid UTF-8.
                    out.push_str(std::str::from_utf8(&self.pending[start..valid]).unwrap_or(""));
                    match e.error_len() {
                        Some(n) => {
                            out.push(char::REPLACEMENT_CHARACTER);
                            start = valid + n;
                        }
                        None => {
                            // An incomplete character at the end: hold it back.
                            start = valid;
                            break;
                        }
                    }
                }
            }
        }
        self.pending.drain(..start);
        Ok(out)
    }

    /// Bytes held back, waiting for the rest of a character.
    pub fn pending(&self) -> &[u8] {
        &self.pending
    }

    /// Ends the stream: returns what is held back (an incomplete character becomes U+FFFD) and
    /// leaves the decoder empty, ready for a new stream.
    pub fn finish(&mut self) -> String {
        let s = String::from_utf8_lossy(&self.pending).into_owned();
        self.pending.clear();
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tok(tokens: &[&[u8]]) -> Tokenizer {
        Tokenizer::from_token_bytes(tokens.iter().map(|t| t.to_vec()).collect()).unwrap()
    }

    #[test]
    fn ascii_passes_through() {
        let t = tok(&[b"Hello", b", ", b"world"]);
        let mut d = t.stream_decoder();
        assert_eq!(d.push(0).unwrap(), "Hello");
        assert_eq!(d.push(1).unwrap(), ", ");
        assert_eq!(d.push(2).unwrap(), "world");
        assert_eq!(d.finish(), "");
    }

    #[test]
    fn invalid_bytes_flush_as_replacement() {
        // 0xe4 starts a 3-byte character; 'a' can never continue it.
        let t = tok(&[b"\xe4", b"a", b"\x80", b"\xbd\xa0"]);
        let mut d = t.stream_decoder();
        assert_eq!(d.push(0).unwrap(), "");
        assert_eq!(d.pending(), b"\xe4");
        assert_eq!(d.push(1).unwrap(), "\u{FFFD}a");
        assert_eq!(d.push(2).unwrap(), "\u{FFFD}");
        // A complete character after a stray byte.
        assert_eq!(d.push(0).unwrap(), "");
        assert_eq!(d.push(3).unwrap(), "你");
        // Incomplete at the end.
        assert_eq!(d.push(0).unwrap(), "");
        assert_eq!(d.finish(), "\u{FFFD}");
        assert_eq!(d.pending(), b"");
    }

    #[test]
    fn unknown_id_leaves_state_alone() {
        let t = tok(&[b"\xe4\xbd", b"\xa0"]);
        let mut d = t.stream_decoder();
        assert_eq!(d.push(0).unwrap(), "");
        assert!(matches!(
            d.push(9),
            Err(TokenizerError::UnknownId { id: 9, .. })
        ));
        assert_eq!(d.push(1).unwrap(), "你");
    }
}
