//! Hand-made vocabularies: longest match, decoding errors, streaming of split characters.

use rwkv_tokenizer::{Tokenizer, TokenizerError};

fn tok(tokens: &[&[u8]]) -> Tokenizer {
    Tokenizer::from_token_bytes(tokens.iter().map(|t| t.to_vec()).collect()).unwrap()
}

#[test]
fn longest_match_is_preferred() {
    let t = tok(&[b"<s>", b"a", b"ab", b"abc", b"b", b"c", b"abcd"]);
    assert_eq!(t.encode(b"abcab"), vec![3, 2]);
    assert_eq!(t.encode(b"abcd"), vec![6]);
    assert_eq!(t.encode(b"abcdabc"), vec![6, 3]);
    assert_eq!(t.encode(b"aabb"), vec![1, 2, 4]);
    assert_eq!(t.encode(b"cba"), vec![5, 4, 1]);
}

#[test]
fn greedy_not_optimal() {
    // Greedy takes "ab" and is then left with single bytes, like the reference tokenizer,
    // even though "a" + "bcd" would be shorter.
    let t = tok(&[b"a", b"b", b"c", b"d", b"ab", b"bcd"]);
    assert_eq!(t.encode(b"abcd"), vec![4, 2, 3]);
}

#[test]
fn decode_unknown_id_is_an_error() {
    let t = tok(&[b"a", b"b"]);
    assert_eq!(t.decode(&[0, 1, 0]).unwrap(), b"aba");
    let err = t.decode(&[1, 2]).unwrap_err();
    assert!(
        matches!(
            err,
            TokenizerError::UnknownId {
                id: 2,
                vocab_size: 2
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("unknown token id 2"), "{err}");
    assert!(t.decode(&[u32::MAX]).is_err());
    assert!(t.stream_decoder().push(7).is_err());
}

#[test]
fn stream_decoder_holds_split_emoji() {
    // 🙂 is F0 9F 99 82; split it over three tokens, the last one followed by ASCII.
    let t = tok(&[
        b"<s>",
        b"hi ",
        b"\xf0\x9f",
        b"\x99",
        b"\x82!",
        b"\xe4",
        b"\xbd\xa0",
    ]);
    let mut d = t.stream_decoder();
    assert_eq!(d.push(1).unwrap(), "hi ");
    assert_eq!(d.push(2).unwrap(), "");
    assert_eq!(d.pending(), b"\xf0\x9f");
    assert_eq!(d.push(3).unwrap(), "");
    assert_eq!(d.push(4).unwrap(), "🙂!");
    assert_eq!(d.pending(), b"");
    // A CJK character split 1 + 2.
    assert_eq!(d.push(5).unwrap(), "");
    assert_eq!(d.push(6).unwrap(), "你");
    assert_eq!(d.finish(), "");
}

#[test]
fn stream_decoder_flushes_what_cannot_complete() {
    let t = tok(&[b"\xf0\x9f", b"x", b"\x99\x82"]);
    let mut d = t.stream_decoder();
    assert_eq!(d.push(0).unwrap(), "");
    // "x" can never continue F0 9F: the held bytes go out as one U+FFFD, then "x".
    assert_eq!(d.push(1).unwrap(), "\u{FFFD}x");
    // Orphan continuation bytes.
    assert_eq!(d.push(2).unwrap(), "\u{FFFD}\u{FFFD}");
    // An incomplete tail at the end of the stream.
    assert_eq!(d.push(0).unwrap(), "");
    assert_eq!(d.finish(), "\u{FFFD}");
    // The decoder is reusable after finish.
    assert_eq!(d.push(0).unwrap(), "");
    assert_eq!(d.push(2).unwrap(), "🙂");
}
