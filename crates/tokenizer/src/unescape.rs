//! Unescaping of GGUF token text back to bytes.
//!
//! llama.cpp's converter (`convert_hf_to_gguf.py`, `_set_vocab_rwkv_world`) stores each RWKV World
//! token as `repr(token_bytes)[2:-1]`, i.e. the body of a Python bytes literal: printable ASCII as
//! itself, `\\` for a backslash, `\'` for a quote (only when Python chose single quotes), `\t`,
//! `\n`, `\r`, and `\xNN` (lowercase hex) for every other byte. llama.cpp reads them back with
//! `llama_unescape_rwkv_token`, which understands `\t`, `\n`, `\r` and `\xNN`, and turns a
//! backslash followed by any other character into that character (so `\\` → `\`, `\'` → `'`,
//! `\"` → `"`, and also `\u` → `u`: Python's bytes repr never writes `\u`/`\U`/octal escapes).
//!
//! [`unescape_token`] accepts exactly that, with two differences where llama.cpp silently produces
//! garbage: a backslash at the very end, or `\x` not followed by two hex digits, is an error
//! instead; and uppercase hex digits are read correctly (llama.cpp only decodes lowercase ones,
//! which is all Python writes).

/// Why a token's escaped text could not be turned back into bytes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UnescapeError {
    /// The text ends with a lone backslash.
    #[error("lone backslash at the end (byte {offset})")]
    TrailingBackslash { offset: usize },
    /// `\x` is not followed by two hex digits.
    #[error("invalid escape {escape:?} at byte {offset}: \\x needs two hex digits")]
    BadHexEscape { offset: usize, escape: String },
}

fn hex_value(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

/// Turns one token's escaped text (as stored in `tokenizer.ggml.tokens`) back into its bytes.
///
/// ```
/// use rwkv_tokenizer::unescape_token;
/// assert_eq!(unescape_token(r"\xe4\xbd").unwrap(), vec![0xe4, 0xbd]);
/// assert_eq!(unescape_token(r"it\'s\n").unwrap(), b"it's\n".to_vec());
/// assert!(unescape_token(r"\x4").is_err());
/// ```
pub fn unescape_token(text: &str) -> Result<Vec<u8>, UnescapeError> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let c = bytes[i];
        if c != b'\\' {
            out.push(c);
            i += 1;
            continue;
        }
        let Some(&e) = bytes.get(i + 1) else {
            return Err(UnescapeError::TrailingBackslash { offset: i });
        };
        match e {
            b't' => out.push(b'\t'),
            b'n' => out.push(b'\n'),
            b'r' => out.push(b'\r'),
            b'x' => {
                let hi = bytes.get(i + 2).copied().and_then(hex_value);
                let lo = bytes.get(i + 3).copied().and_then(hex_value);
                match (hi, lo) {
                    (Some(hi), Some(lo)) => out.push((hi << 4) | lo),
                    _ => {
                        return Err(UnescapeError::BadHexEscape {
                            offset: i,
                            escape: text[i..].chars().take(4).collect(),
                        })
                    }
                }
                i += 4;
                continue;
            }
            // Any other character stands for itself. For a multi-byte character only its first
            // byte is taken here; the rest follow as ordinary bytes, so the character survives.
            other => out.push(other),
        }
        i += 2;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_text_is_unchanged() {
        assert_eq!(unescape_token("hello").unwrap(), b"hello");
        assert_eq!(unescape_token("").unwrap(), b"");
        assert_eq!(unescape_token("你好").unwrap(), "你好".as_bytes());
    }

    #[test]
    fn simple_escapes() {
        assert_eq!(unescape_token(r"\x00").unwrap(), [0u8]);
        assert_eq!(unescape_token(r"\xff\xFE").unwrap(), [0xff, 0xfe]);
        assert_eq!(unescape_token(r"\\").unwrap(), b"\\");
        assert_eq!(unescape_token(r"\n").unwrap(), b"\n");
        assert_eq!(unescape_token(r"\t\r").unwrap(), b"\t\r");
        assert_eq!(unescape_token(r"\'").unwrap(), b"'");
        assert_eq!(unescape_token(r#"\""#).unwrap(), b"\"");
        assert_eq!(unescape_token(r"a\\nb").unwrap(), b"a\\nb");
        assert_eq!(unescape_token(r"\xe4\xbd\xa0").unwrap(), "你".as_bytes());
    }

    #[test]
    fn unknown_escapes_stand_for_themselves_like_llama_cpp() {
        assert_eq!(unescape_token(r"\u1234").unwrap(), b"u1234");
        assert_eq!(unescape_token(r"\0").unwrap(), b"0");
        assert_eq!(unescape_token("\\你").unwrap(), "你".as_bytes());
    }

    #[test]
    fn malformed_escapes_are_errors() {
        assert_eq!(
            unescape_token("ab\\"),
            Err(UnescapeError::TrailingBackslash { offset: 2 })
        );
        assert!(matches!(
            unescape_token(r"\x"),
            Err(UnescapeError::BadHexEscape { offset: 0, .. })
        ));
        assert!(matches!(
            unescape_token(r"\x4"),
            Err(UnescapeError::BadHexEscape { offset: 0, .. })
        ));
        assert!(matches!(
            unescape_token(r"a\xg0"),
            Err(UnescapeError::BadHexEscape { offset: 1, .. })
        ));
        assert!(matches!(
            unescape_token("\\x你"),
            Err(UnescapeError::BadHexEscape { offset: 0, .. })
        ));
        let msg = unescape_token(r"\xzz").unwrap_err().to_string();
        assert!(msg.contains(r"\xzz"), "{msg}");
    }
}
