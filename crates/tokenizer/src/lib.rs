//! The RWKV World tokenizer, as stored in GGUF files with `tokenizer.ggml.model = "rwkv"`.
//!
//! The vocabulary maps token ids to arbitrary byte strings. Text is encoded greedily, exactly like
//! the reference `TRIE_TOKENIZER` of the `rwkv` Python package: at each position take the longest
//! token that is a prefix of the remaining bytes. Decoding concatenates token bytes;
//! [`StreamDecoder`] turns a stream of ids into text one complete UTF-8 character at a time.
//!
//! In GGUF the tokens are stored as Python-escaped text (see [`unescape_token`]); token 0 is the
//! control token `<s>`, which the RWKV reference never produces from text (llama.cpp does when the
//! text contains `<s>`; we follow the reference), and llama.cpp's converter pads the vocabulary
//! with unused `[PAD…]` tokens, which encoding never produces either.
//!
//! Encoding walks a double-array byte trie (one load and compare per byte); it runs at several
//! hundred MB/s on English text (`cargo bench -p rwkv-tokenizer`).

mod stream;
mod trie;
mod unescape;

pub use stream::StreamDecoder;
pub use unescape::{unescape_token, UnescapeError};

use trie::DoubleArray;

/// GGUF key naming the tokenizer model.
pub const KEY_MODEL: &str = "tokenizer.ggml.model";
/// GGUF key holding the (escaped) token texts.
pub const KEY_TOKENS: &str = "tokenizer.ggml.tokens";
/// GGUF key holding the token types (int32 array, llama.cpp's `llama_token_type`).
pub const KEY_TOKEN_TYPE: &str = "tokenizer.ggml.token_type";
/// The value of [`KEY_MODEL`] for the RWKV World tokenizer.
pub const MODEL_RWKV: &str = "rwkv";
/// llama.cpp's token type for control tokens (`LLAMA_TOKEN_TYPE_CONTROL`): `<s>` at id 0.
pub const TOKEN_TYPE_CONTROL: i64 = 3;
/// llama.cpp's token type for unused tokens (`LLAMA_TOKEN_TYPE_UNUSED`): the converter pads the
/// 65529-token World vocabulary to 65536 with `[PAD65530]`..`[PAD65535]` of this type.
pub const TOKEN_TYPE_UNUSED: i64 = 5;

/// Everything that can go wrong loading a vocabulary or decoding ids.
#[derive(Debug, thiserror::Error)]
pub enum TokenizerError {
    #[error(transparent)]
    Gguf(#[from] gguf::GgufError),
    #[error("the GGUF file has no tokenizer (metadata key {KEY_MODEL:?} is missing)")]
    MissingModel,
    #[error(
        "the GGUF file's tokenizer model is {found:?}, but only the RWKV World tokenizer \
         ({KEY_MODEL} = \"rwkv\") is supported"
    )]
    WrongModel { found: String },
    #[error("the vocabulary is empty")]
    EmptyVocab,
    #[error("the vocabulary has {0} tokens, more than u32 ids can number")]
    VocabTooLarge(usize),
    #[error("token {id} ({text:?}) cannot be unescaped: {source}")]
    BadEscape {
        id: u32,
        text: String,
        #[source]
        source: UnescapeError,
    },
    #[error("{KEY_TOKEN_TYPE} has {types} entries but {KEY_TOKENS} has {tokens}")]
    TokenTypeCount { types: usize, tokens: usize },
    #[error("unknown token id {id} (the vocabulary has {vocab_size} tokens)")]
    UnknownId { id: u32, vocab_size: usize },
}

/// The RWKV World tokenizer: token bytes for decoding and a byte trie for encoding.
#[derive(Clone)]
pub struct Tokenizer {
    /// All token bytes, concatenated; token `i` is `bytes[offsets[i]..offsets[i + 1]]`.
    bytes: Vec<u8>,
    offsets: Vec<usize>,
    /// Sorted ids that encoding never produces (control and unused tokens such as `<s>`).
    special: Vec<u32>,
    trie: DoubleArray,
    /// Whether every single byte is a matchable token, so that encoding never drops bytes.
    covers_all_bytes: bool,
}

impl std::fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokenizer")
            .field("vocab_size", &self.vocab_size())
            .field("special", &self.special)
            .field("trie_slots", &self.trie.slots())
            .field("covers_all_bytes", &self.covers_all_bytes)
            .finish()
    }
}

impl Tokenizer {
    /// Loads the tokenizer of a GGUF file whose `tokenizer.ggml.model` is `"rwkv"`.
    ///
    /// Control and unused tokens (types 3 and 5 in `tokenizer.ggml.token_type`: `<s>` at id 0 and
    /// the converter's `[PAD65530]`..`[PAD65535]` padding) can be decoded but are never produced
    /// by [`encode`](Self::encode), as in the RWKV reference tokenizer, whose vocabulary has
    /// neither. Without a token type array, id 0 and tokens whose text is `[PAD<their id>]` are
    /// taken to be those.
    pub fn from_gguf(file: &gguf::GgufFile) -> Result<Tokenizer, TokenizerError> {
        if file.get(KEY_MODEL).is_none() {
            return Err(TokenizerError::MissingModel);
        }
        let model = file.get_str(KEY_MODEL)?;
        if model != MODEL_RWKV {
            return Err(TokenizerError::WrongModel {
                found: model.to_string(),
            });
        }
        let texts = file.get_str_array(KEY_TOKENS)?;
        if texts.is_empty() {
            return Err(TokenizerError::EmptyVocab);
        }
        if u32::try_from(texts.len()).is_err() {
            return Err(TokenizerError::VocabTooLarge(texts.len()));
        }
        let special: Vec<u32> = match file.get(KEY_TOKEN_TYPE) {
            Some(_) => {
                let types = file.get_int_array(KEY_TOKEN_TYPE)?;
                if types.len() != texts.len() {
                    return Err(TokenizerError::TokenTypeCount {
                        types: types.len(),
                        tokens: texts.len(),
                    });
                }
                (0u32..)
                    .zip(&types)
                    .filter(|&(_, &t)| t == TOKEN_TYPE_CONTROL || t == TOKEN_TYPE_UNUSED)
                    .map(|(id, _)| id)
                    .collect()
            }
            None => (0u32..)
                .zip(&texts)
                .filter(|&(id, text)| id == 0 || *text == format!("[PAD{id}]"))
                .map(|(id, _)| id)
                .collect(),
        };
        let tokens = (0u32..)
            .zip(&texts)
            .map(|(id, text)| {
                unescape_token(text).map_err(|source| TokenizerError::BadEscape {
                    id,
                    text: text.to_string(),
                    source,
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Self::build(tokens, special)
    }

    /// A tokenizer over raw token bytes (id = index). Every non-empty token can be produced by
    /// encoding; use [`from_token_bytes_except`](Self::from_token_bytes_except) to keep control
    /// tokens out of encoding.
    pub fn from_token_bytes(tokens: Vec<Vec<u8>>) -> Result<Tokenizer, TokenizerError> {
        Self::build(tokens, Vec::new())
    }

    /// Like [`from_token_bytes`](Self::from_token_bytes), but `special` ids (e.g. `[0]` for the
    /// World vocab's `<s>`) are never produced by encoding. Ids outside the vocabulary are ignored.
    pub fn from_token_bytes_except(
        tokens: Vec<Vec<u8>>,
        special: &[u32],
    ) -> Result<Tokenizer, TokenizerError> {
        Self::build(tokens, special.to_vec())
    }

    fn build(tokens: Vec<Vec<u8>>, mut special: Vec<u32>) -> Result<Tokenizer, TokenizerError> {
        if tokens.is_empty() {
            return Err(TokenizerError::EmptyVocab);
        }
        if u32::try_from(tokens.len()).is_err() {
            return Err(TokenizerError::VocabTooLarge(tokens.len()));
        }
        special.retain(|&id| (id as usize) < tokens.len());
        special.sort_unstable();
        special.dedup();

        let mut offsets = Vec::with_capacity(tokens.len() + 1);
        let mut bytes = Vec::with_capacity(tokens.iter().map(Vec::len).sum());
        offsets.push(0);
        for t in &tokens {
            bytes.extend_from_slice(t);
            offsets.push(bytes.len());
        }

        let mut single = [false; 256];
        let keys: Vec<(&[u8], u32)> = (0u32..)
            .zip(&tokens)
            .filter(|(id, t)| !t.is_empty() && special.binary_search(id).is_err())
            .map(|(id, t)| {
                if let [b] = t[..] {
                    single[b as usize] = true;
                }
                (t.as_slice(), id)
            })
            .collect();
        let trie = DoubleArray::build(keys);
        Ok(Tokenizer {
            bytes,
            offsets,
            special,
            trie,
            covers_all_bytes: single.iter().all(|&s| s),
        })
    }

    /// Encodes bytes by greedy longest match.
    ///
    /// A byte that starts no token at all (impossible with the World vocabulary, which has all
    /// 256 single bytes; see [`covers_all_bytes`](Self::covers_all_bytes)) is skipped: it
    /// produces no id, so it is lost on decoding. The reference tokenizer would fail there.
    pub fn encode(&self, text: &[u8]) -> Vec<u32> {
        let mut out = Vec::with_capacity(text.len() / 3 + 1);
        self.encode_into(text, &mut out);
        out
    }

    /// Encodes UTF-8 text; the same as [`encode`](Self::encode) on its bytes.
    pub fn encode_str(&self, text: &str) -> Vec<u32> {
        self.encode(text.as_bytes())
    }

    /// Encodes `text`, appending the ids to `out`.
    pub fn encode_into(&self, text: &[u8], out: &mut Vec<u32>) {
        let mut rest = text;
        while !rest.is_empty() {
            match self.trie.longest_prefix(rest) {
                Some((id, len)) => {
                    out.push(id);
                    rest = &rest[len..];
                }
                None => rest = &rest[1..],
            }
        }
    }

    /// The concatenated bytes of `ids`; an id outside the vocabulary is an error.
    pub fn decode(&self, ids: &[u32]) -> Result<Vec<u8>, TokenizerError> {
        let mut out = Vec::with_capacity(ids.len() * 4);
        for &id in ids {
            out.extend_from_slice(self.token_bytes_or_err(id)?);
        }
        Ok(out)
    }

    /// [`decode`](Self::decode) as text, with invalid UTF-8 replaced by U+FFFD.
    pub fn decode_lossy(&self, ids: &[u32]) -> Result<String, TokenizerError> {
        Ok(String::from_utf8_lossy(&self.decode(ids)?).into_owned())
    }

    /// The bytes of one token, or `None` for an id outside the vocabulary.
    pub fn token_bytes(&self, id: u32) -> Option<&[u8]> {
        let i = id as usize;
        let (&start, &end) = (self.offsets.get(i)?, self.offsets.get(i + 1)?);
        Some(&self.bytes[start..end])
    }

    pub(crate) fn token_bytes_or_err(&self, id: u32) -> Result<&[u8], TokenizerError> {
        self.token_bytes(id).ok_or(TokenizerError::UnknownId {
            id,
            vocab_size: self.vocab_size(),
        })
    }

    /// Number of tokens (ids are `0..vocab_size`).
    pub fn vocab_size(&self) -> usize {
        self.offsets.len() - 1
    }

    /// Whether `id` is a control or unused token that encoding never produces (`<s>` and the
    /// `[PAD…]` padding in the World vocab).
    pub fn is_special(&self, id: u32) -> bool {
        self.special.binary_search(&id).is_ok()
    }

    /// Whether every byte value is itself an encodable token, so that
    /// `decode(encode(bytes)) == bytes` for all inputs.
    pub fn covers_all_bytes(&self) -> bool {
        self.covers_all_bytes
    }

    /// A decoder that turns ids into text as characters complete.
    pub fn stream_decoder(&self) -> StreamDecoder<'_> {
        StreamDecoder::new(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tok(tokens: &[&[u8]]) -> Tokenizer {
        Tokenizer::from_token_bytes(tokens.iter().map(|t| t.to_vec()).collect()).unwrap()
    }

    #[test]
    fn empty_vocab_is_an_error() {
        assert!(matches!(
            Tokenizer::from_token_bytes(vec![]),
            Err(TokenizerError::EmptyVocab)
        ));
    }

    #[test]
    fn unmatched_bytes_are_skipped() {
        let t = tok(&[b"a", b"bc"]);
        assert!(!t.covers_all_bytes());
        assert_eq!(t.encode(b"xaybcz"), vec![0, 1]);
        assert_eq!(t.encode(b"b"), Vec::<u32>::new());
        assert_eq!(t.encode(b""), Vec::<u32>::new());
    }

    #[test]
    fn special_ids_are_not_encoded() {
        let t = Tokenizer::from_token_bytes_except(
            vec![b"<s>".to_vec(), b"<".to_vec(), b"s".to_vec(), b">".to_vec()],
            &[0, 99],
        )
        .unwrap();
        assert!(t.is_special(0));
        assert!(!t.is_special(1));
        assert_eq!(t.encode(b"<s>"), vec![1, 2, 3]);
        assert_eq!(t.decode(&[0]).unwrap(), b"<s>");
    }

    #[test]
    fn empty_tokens_decode_to_nothing() {
        let t = tok(&[b"", b"a"]);
        assert_eq!(t.encode(b"aa"), vec![1, 1]);
        assert_eq!(t.decode(&[0, 1, 0]).unwrap(), b"a");
        assert_eq!(t.token_bytes(0), Some(&b""[..]));
        assert_eq!(t.token_bytes(2), None);
    }

    #[test]
    fn unknown_id_names_it() {
        let t = tok(&[b"a"]);
        let err = t.decode(&[0, 5]).unwrap_err();
        assert!(matches!(err, TokenizerError::UnknownId { id: 5, .. }));
        assert!(err.to_string().contains('5'), "{err}");
    }
}
