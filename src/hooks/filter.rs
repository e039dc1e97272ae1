//! The filter stage a client publish passes before its hook (or without one): words from
//! `--publish-filter-words` masked with `*` (one per character) in every string VALUE of the
//! payload, as whole words (runs of alphanumeric characters) and whatever their case. It runs on
//! the node, so the common case of a chat room's word list needs no backend and costs no round
//! trip.
//!
//! It works on the payload's JSON text, in one pass and without recursion: whatever is not a
//! masked word (numbers, whitespace, key order, escapes, keys) is passed on byte for byte, so
//! `123456789012345678901234`, `1e400` or `1.50` stay as the client wrote them, and a payload
//! nested 10,000 deep is filtered like a flat one. Object keys are never masked: two keys masked
//! alike (`{"darn":1,"heck":2}`) would become one, and a value would be lost. A word written
//! with escapes (`\u0064arn`) is still that word; an escape inside a word is masked with the rest
//! of it. The cost is linear in the payload's length whatever the number of listed words: each
//! word of the payload is looked up once in a set, and lowercased (into one reused buffer) only
//! when it is not already lowercase ASCII. Text that is not JSON is refused, not passed on.

use std::collections::HashSet;
use std::hash::{BuildHasherDefault, Hasher};

use serde_json::value::RawValue;

/// Why a payload was not filtered (and so not published).
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum FilterError {
    /// Not JSON text: nothing of it can be told apart from a word, so none of it is passed on.
    #[error("the payload is not valid JSON (at byte {at}), so the word filter cannot read it")]
    Unreadable { at: usize },
}

/// The words to mask, case-folded.
#[derive(Default)]
pub struct WordFilter {
    words: HashSet<String, BuildHasherDefault<WordHasher>>,
    /// The longest folded word, in bytes: a longer run of the payload is not looked up.
    longest: usize,
    /// One bit set for each listed word's [`sketch`]: most words of a payload are not listed,
    /// and a clear bit tells so without hashing the word and probing the set.
    sketches: Vec<u64>,
}

impl WordFilter {
    /// A filter of `words` (folded again here, so they compare with the payload's words however
    /// they were lowercased).
    pub fn new(words: Vec<String>) -> WordFilter {
        let words: HashSet<String, _> = words
            .iter()
            .map(|word| {
                let mut folded = String::with_capacity(word.len());
                word.chars().for_each(|c| fold(c, &mut folded));
                folded
            })
            .filter(|w| !w.is_empty())
            .collect();
        let longest = words.iter().map(String::len).max().unwrap_or(0);
        let mut sketches = vec![0; SKETCHES / 64];
        for word in &words {
            let bit = sketch(word);
            sketches[bit / 64] |= 1 << (bit % 64);
        }
        WordFilter {
            words,
            longest,
            sketches,
        }
    }

    /// Whether `folded` (a payload's word, case-folded) is listed.
    fn lists(&self, folded: &str) -> bool {
        let bit = sketch(folded);
        self.sketches
            .get(bit / 64)
            .is_some_and(|bits| bits & (1 << (bit % 64)) != 0)
            && self.words.contains(folded)
    }

    pub fn is_empty(&self) -> bool {
        self.words.is_empty()
    }

    /// `payload` with every listed word of its string values masked (keys are kept as they
    /// are: masking them could merge two keys and lose a value). A payload with none of them is
    /// returned as it came, the same allocation; with no words listed, it is not read at all.
    /// Text that is not JSON is refused with a reason the client can be told.
    pub fn apply(&self, payload: Box<RawValue>) -> Result<Box<RawValue>, FilterError> {
        if self.words.is_empty() {
            return Ok(payload);
        }
        match self.mask(payload.get())? {
            None => Ok(payload),
            // Only whole characters of strings became `*`, so the text is still the JSON that
            // was read and this cannot fail; were it to, refusing is safer than passing it on.
            Some(masked) => RawValue::from_string(masked)
                .map_err(|e| FilterError::Unreadable { at: e.column() }),
        }
    }

    /// `json` with the listed words of its string values masked, if it has any; keys are not
    /// masked. Refused when `json` is not one JSON value (surrounded by whitespace, if any).
    fn mask(&self, json: &str) -> Result<Option<String>, FilterError> {
        let mut scan = Scan {
            filter: self,
            text: json,
            bytes: json.as_bytes(),
            masked: None,
            copied: 0,
            folded: String::new(),
        };
        scan.document()?;
        Ok(scan.masked.map(|mut out| {
            out.push_str(&json[scan.copied..]);
            out
        }))
    }
}

/// Bits of [`WordFilter::sketches`]: 2 KiB, which stays in the L1 cache.
const SKETCHES: usize = 1 << 14;

/// A cheap hash of a word, below [`SKETCHES`]: its first 8 bytes and its length.
fn sketch(word: &str) -> usize {
    let bytes = word.as_bytes();
    // Byte by byte, not a copy into an array: a short copy of a variable length is a call, and
    // reading the array back stalls.
    let head = match bytes.first_chunk::<8>() {
        Some(head) => u64::from_le_bytes(*head),
        None => bytes
            .iter()
            .rev()
            .fold(0, |head, &b| head << 8 | u64::from(b)),
    };
    let key = head ^ (bytes.len() as u64).rotate_right(8);
    (key.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> (64 - SKETCHES.trailing_zeros())) as usize
}

/// Pushes `c` case-folded: lowercased, and a final sigma as any other (`str::to_lowercase`
/// writes `ς` at a word's end, a character at a time gives `σ`).
fn fold(c: char, into: &mut String) {
    for lower in c.to_lowercase() {
        into.push(if lower == 'ς' { 'σ' } else { lower });
    }
}

/// The set's hash: hashing each word of a payload with the standard SipHash was most of the
/// filter's cost. A keyed hash buys nothing here: the set's words are the operator's, and a
/// payload only looks words up, so it can at most land on the longest run the set already has.
#[derive(Default, Clone, Copy)]
struct WordHasher(u64);

impl WordHasher {
    const K: u64 = 0x9e37_79b9_7f4a_7c15;

    /// Both halves of the 128-bit product, folded: every input bit reaches every output bit.
    fn mix(x: u64) -> u64 {
        let product = u128::from(x) * u128::from(WordHasher::K);
        (product as u64) ^ ((product >> 64) as u64)
    }
}

impl Hasher for WordHasher {
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for chunk in &mut chunks {
            let word = u64::from_le_bytes(chunk.try_into().expect("8 bytes"));
            self.0 = WordHasher::mix(self.0 ^ word);
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut last = [0; 8];
            last[..rest.len()].copy_from_slice(rest);
            self.0 = WordHasher::mix(self.0 ^ u64::from_le_bytes(last));
        }
    }

    fn write_u8(&mut self, byte: u8) {
        self.0 = WordHasher::mix(self.0 ^ u64::from(byte));
    }

    fn finish(&self) -> u64 {
        WordHasher::mix(self.0.rotate_left(32))
    }
}

/// What a value is inside of.
#[derive(Clone, Copy)]
enum Container {
    Object,
    Array,
}

/// A run of word characters being read in a string.
#[derive(Clone, Copy)]
struct Word {
    /// Where its first character starts in the text (an escape's backslash, if escaped).
    start: usize,
    chars: usize,
    /// Every character so far was written as itself and is lowercase ASCII or a digit: the text
    /// is its folded form, and nothing is copied to look it up.
    plain: bool,
    /// Its folded form is longer than any listed word.
    long: bool,
}

/// One pass over a payload's text.
struct Scan<'a> {
    filter: &'a WordFilter,
    text: &'a str,
    bytes: &'a [u8],
    /// The output so far, from the first masked word on: a clean payload is never copied.
    masked: Option<String>,
    /// The text before this is in `masked`.
    copied: usize,
    /// The folded form of the word being read, when it is not `plain` (reused: no allocation
    /// per word).
    folded: String,
}

impl Scan<'_> {
    fn unreadable<T>(&self, at: usize) -> Result<T, FilterError> {
        Err(FilterError::Unreadable { at })
    }

    fn whitespace(&self, mut at: usize) -> usize {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.bytes.get(at) {
            at += 1;
        }
        at
    }

    /// Reads the whole text, one value and whitespace around it. Nesting is kept on a stack of
    /// its own, not the thread's, so no depth is too deep.
    fn document(&mut self) -> Result<(), FilterError> {
        let mut stack: Vec<Container> = Vec::new();
        let mut at = self.whitespace(0);
        loop {
            // A value starts at `at`.
            match self.bytes.get(at) {
                Some(b'{') => {
                    at = self.whitespace(at + 1);
                    if self.bytes.get(at) == Some(&b'}') {
                        at += 1;
                    } else {
                        stack.push(Container::Object);
                        at = self.key(at)?;
                        continue;
                    }
                }
                Some(b'[') => {
                    at = self.whitespace(at + 1);
                    if self.bytes.get(at) == Some(&b']') {
                        at += 1;
                    } else {
                        stack.push(Container::Array);
                        continue;
                    }
                }
                Some(b'"') => at = self.string(at, true)?,
                Some(b't') => at = self.literal(at, b"true")?,
                Some(b'f') => at = self.literal(at, b"false")?,
                Some(b'n') => at = self.literal(at, b"null")?,
                Some(b'-' | b'0'..=b'9') => at = self.number(at)?,
                _ => return self.unreadable(at),
            }
            // A value ended before `at`: what follows closes containers, until one goes on.
            loop {
                at = self.whitespace(at);
                match (stack.last(), self.bytes.get(at)) {
                    (None, None) => return Ok(()),
                    (Some(Container::Array), Some(b',')) => {
                        at = self.whitespace(at + 1);
                        break;
                    }
                    (Some(Container::Object), Some(b',')) => {
                        at = self.key(self.whitespace(at + 1))?;
                        break;
                    }
                    (Some(Container::Array), Some(b']'))
                    | (Some(Container::Object), Some(b'}')) => {
                        stack.pop();
                        at += 1;
                    }
                    _ => return self.unreadable(at),
                }
            }
        }
    }

    /// Reads `"key" :` at `at`; where its value starts.
    fn key(&mut self, at: usize) -> Result<usize, FilterError> {
        if self.bytes.get(at) != Some(&b'"') {
            return self.unreadable(at);
        }
        let end = self.string(at, false)?;
        let at = self.whitespace(end);
        if self.bytes.get(at) != Some(&b':') {
            return self.unreadable(at);
        }
        Ok(self.whitespace(at + 1))
    }

    fn literal(&self, at: usize, word: &[u8]) -> Result<usize, FilterError> {
        match self.bytes.get(at..at + word.len()) {
            Some(written) if written == word => Ok(at + word.len()),
            _ => self.unreadable(at),
        }
    }

    /// Reads a number (not converted: its text is passed on as it is); where it ends.
    fn number(&self, mut at: usize) -> Result<usize, FilterError> {
        let digits = |mut at: usize| {
            let from = at;
            while self.bytes.get(at).is_some_and(u8::is_ascii_digit) {
                at += 1;
            }
            (at > from).then_some(at)
        };
        if self.bytes[at] == b'-' {
            at += 1;
        }
        at = match self.bytes.get(at) {
            Some(b'0') => at + 1,
            Some(b'1'..=b'9') => digits(at).unwrap_or(at),
            _ => return self.unreadable(at),
        };
        if self.bytes.get(at) == Some(&b'.') {
            at = match digits(at + 1) {
                Some(end) => end,
                None => return self.unreadable(at + 1),
            };
        }
        if let Some(b'e' | b'E') = self.bytes.get(at) {
            at += 1;
            if let Some(b'+' | b'-') = self.bytes.get(at) {
                at += 1;
            }
            at = match digits(at) {
                Some(end) => end,
                None => return self.unreadable(at),
            };
        }
        Ok(at)
    }

    /// Reads the string whose quote is at `start`, masking its listed words if `words` (a
    /// value, not a key); where it ends.
    fn string(&mut self, start: usize, words: bool) -> Result<usize, FilterError> {
        if !words {
            return self.key_string(start);
        }
        let mut at = start + 1;
        let mut word: Option<Word> = None;
        loop {
            let from = at;
            match self.bytes.get(at) {
                None => return self.unreadable(at),
                Some(b'"') => {
                    if let Some(word) = word {
                        self.word_ends(word, at);
                    }
                    return Ok(at + 1);
                }
                Some(0..=0x1f) => return self.unreadable(at),
                Some(b) if b.is_ascii_alphanumeric() => {
                    // Most of a payload's words are ASCII: a run of them at once.
                    let mut lowercase = true;
                    while let Some(b) = self.bytes.get(at).filter(|b| b.is_ascii_alphanumeric()) {
                        lowercase &= !b.is_ascii_uppercase();
                        at += 1;
                    }
                    self.word_goes_on(&mut word, from, at, at - from, lowercase, None);
                }
                Some(b'\\') => {
                    // An escaped character: a word's if it is a letter or a digit, and never
                    // `plain` (its text is not its folded form). A lone surrogate is no word's.
                    let (c, end) = self.escape(at)?;
                    at = end;
                    match c {
                        Some(c) if c.is_alphanumeric() => {
                            self.word_goes_on(&mut word, from, at, 1, false, Some(c));
                        }
                        _ => self.word_ends_at(&mut word, from),
                    }
                }
                Some(b) if b.is_ascii() => {
                    while self.bytes.get(at).is_some_and(|&b| {
                        b.is_ascii()
                            && !b.is_ascii_alphanumeric()
                            && b >= 0x20
                            && b != b'"'
                            && b != b'\\'
                    }) {
                        at += 1;
                    }
                    self.word_ends_at(&mut word, from);
                }
                Some(_) => {
                    let c = self.text[at..].chars().next().expect("at a character");
                    at += c.len_utf8();
                    if c.is_alphanumeric() {
                        self.word_goes_on(&mut word, from, at, 1, false, Some(c));
                    } else {
                        self.word_ends_at(&mut word, from);
                    }
                }
            }
        }
    }

    /// Reads the key string whose quote is at `start` (nothing in it is masked); where it ends.
    fn key_string(&self, start: usize) -> Result<usize, FilterError> {
        let mut at = start + 1;
        loop {
            match self.bytes.get(at) {
                None | Some(0..=0x1f) => return self.unreadable(at),
                Some(b'"') => return Ok(at + 1),
                Some(b'\\') => at = self.escape(at)?.1,
                // Bytes beyond ASCII need no decoding: the text is UTF-8 already.
                Some(_) => at += 1,
            }
        }
    }

    /// Word characters from `from` to `end` (`chars` of them) go on `word`, or start one:
    /// `c` when it is one character, else ASCII written as itself, `lowercase` or not.
    fn word_goes_on(
        &mut self,
        word: &mut Option<Word>,
        from: usize,
        end: usize,
        chars: usize,
        lowercase: bool,
        c: Option<char>,
    ) {
        let word = word.get_or_insert(Word {
            start: from,
            chars: 0,
            plain: true,
            long: false,
        });
        word.chars += chars;
        if word.plain && !lowercase {
            word.plain = false;
            self.folded.clear();
            self.folded.push_str(&self.text[word.start..from]);
        }
        if !word.plain && !word.long {
            match c {
                Some(c) => fold(c, &mut self.folded),
                None => self
                    .folded
                    .extend(self.text[from..end].chars().map(|c| c.to_ascii_lowercase())),
            }
            word.long = self.folded.len() > self.filter.longest;
        }
    }

    /// A character that is no word's is at `at`: the word before it, if any, has ended.
    fn word_ends_at(&mut self, word: &mut Option<Word>, at: usize) {
        if let Some(word) = word.take() {
            self.word_ends(word, at);
        }
    }

    /// Reads the escape at `at`: the character it stands for (None for a lone surrogate), and
    /// where it ends (a surrogate pair's two escapes are one character).
    fn escape(&self, at: usize) -> Result<(Option<char>, usize), FilterError> {
        let c = match self.bytes.get(at + 1) {
            Some(b'"') => '"',
            Some(b'\\') => '\\',
            Some(b'/') => '/',
            Some(b'b') => '\u{8}',
            Some(b'f') => '\u{c}',
            Some(b'n') => '\n',
            Some(b'r') => '\r',
            Some(b't') => '\t',
            Some(b'u') => {
                let unit = self.hex(at + 2)?;
                if (0xD800..0xDC00).contains(&unit)
                    && self.bytes.get(at + 6..at + 8) == Some(b"\\u")
                {
                    let low = self.hex(at + 8)?;
                    if (0xDC00..0xE000).contains(&low) {
                        let c = 0x10000 + ((unit - 0xD800) << 10) + (low - 0xDC00);
                        return Ok((char::from_u32(c), at + 12));
                    }
                }
                return Ok((char::from_u32(unit), at + 6));
            }
            _ => return self.unreadable(at + 1),
        };
        Ok((Some(c), at + 2))
    }

    /// The four hex digits at `at`.
    fn hex(&self, at: usize) -> Result<u32, FilterError> {
        let n = self.bytes.len();
        let digits = &self.bytes[at.min(n)..(at + 4).min(n)];
        let mut unit = 0;
        for (i, &b) in digits.iter().enumerate() {
            let Some(digit) = (b as char).to_digit(16) else {
                return self.unreadable(at + i);
            };
            unit = unit * 16 + digit;
        }
        if digits.len() < 4 {
            return self.unreadable(at + digits.len());
        }
        Ok(unit)
    }

    /// `word` ended at `end`: masked if it is listed.
    fn word_ends(&mut self, word: Word, end: usize) {
        let listed = if word.plain {
            end - word.start <= self.filter.longest
                && self.filter.lists(&self.text[word.start..end])
        } else {
            !word.long && self.filter.lists(&self.folded)
        };
        if listed {
            let out = self
                .masked
                .get_or_insert_with(|| String::with_capacity(self.text.len()));
            out.push_str(&self.text[self.copied..word.start]);
            out.extend(std::iter::repeat_n('*', word.chars));
            self.copied = end;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    fn filter() -> WordFilter {
        WordFilter::new(vec!["darn".into(), "heck".into()])
    }

    fn apply(json: &str) -> String {
        let raw = RawValue::from_string(json.into()).unwrap();
        filter().apply(raw).unwrap().get().to_owned()
    }

    #[test]
    fn listed_words_are_masked_in_values_whatever_their_case() {
        let out: Value = serde_json::from_str(&apply(
            r#"{"text":"Darn it, what the HECK! dArN","nested":[{"a":"heck"},"hEcK"]}"#,
        ))
        .unwrap();
        assert_eq!(out["text"], "**** it, what the ****! ****");
        assert_eq!(out["nested"][0]["a"], "****");
        assert_eq!(out["nested"][1], "****");
    }

    #[test]
    fn only_whole_words_are_masked() {
        assert_eq!(
            apply(r#"{"t":"darned undarn darn2 darn_it (darn) heck-heck"}"#),
            r#"{"t":"darned undarn darn2 ****_it (****) ****-****"}"#
        );
    }

    #[test]
    fn keys_are_kept_so_none_is_lost() {
        assert_eq!(
            apply(r#"{"darn":1,"heck":2,"x":{"darn":"darn"}}"#),
            r#"{"darn":1,"heck":2,"x":{"darn":"****"}}"#
        );
    }

    #[test]
    fn numbers_order_and_whitespace_pass_byte_for_byte() {
        let json = "{ \"z\" : 123456789012345678901234,\n\t\"a\":1e400, \"m\" : [ 1.50 , -0.0e-7 ,\
                    true,false,null ],\r\n\"t\":\"darn\" }";
        let expected = json.replace("\"darn\"", "\"****\"");
        assert_eq!(apply(json), expected);
    }

    #[test]
    fn escaped_words_are_words_and_the_result_is_json() {
        // \u0064 is d, \u0044 is D; 𝐝 (U+1D41D, a letter) is written as a surrogate pair.
        let filter = WordFilter::new(vec!["darn".into(), "𝐝arn".into()]);
        let cases = [
            (r#"{"t":"\u0064arn"}"#, r#"{"t":"****"}"#),
            (r#"{"t":"\u0044ARN!"}"#, r#"{"t":"****!"}"#),
            (r#"{"t":"d\"arn"}"#, r#"{"t":"d\"arn"}"#),
            (r#"{"t":"\\darn\n"}"#, r#"{"t":"\\****\n"}"#),
            (r#"{"t":"x\"darn\"y"}"#, r#"{"t":"x\"****\"y"}"#),
            (r#"{"t":"\ud835\udc1darn"}"#, r#"{"t":"****"}"#),
            (r#"{"t":"\ud800darn\udc00"}"#, r#"{"t":"\ud800****\udc00"}"#),
            (r#"{"t":"da\u200brn"}"#, r#"{"t":"da\u200brn"}"#),
        ];
        for (json, expected) in cases {
            let raw = RawValue::from_string(json.into()).unwrap();
            let out = filter.apply(raw).unwrap();
            assert_eq!(out.get(), expected, "{json}");
            // Lone surrogates are JSON text but no string serde decodes: they stay as they came.
            if serde_json::from_str::<Value>(json).is_ok() {
                serde_json::from_str::<Value>(out.get()).unwrap();
            }
        }
    }

    #[test]
    fn deep_nesting_is_filtered_without_recursion() {
        let depth = 10_000;
        let nested = |leaf: &str| {
            format!(
                "{}{}{}",
                r#"{"a":["#.repeat(depth),
                leaf,
                "]}".repeat(depth)
            )
        };
        assert_eq!(apply(&nested(r#""darn""#)), nested(r#""****""#));
        let mut deep_array = "[".repeat(depth);
        deep_array.push_str(r#""heck""#);
        deep_array.push_str(&"]".repeat(depth));
        assert_eq!(
            filter().mask(&deep_array).unwrap().unwrap(),
            deep_array.replace("heck", "****")
        );
    }

    #[test]
    fn text_that_is_not_json_is_refused() {
        let unclosed = "[".repeat(10_000);
        let refused = [
            "",
            " ",
            r#"{"a":1"#,
            r#"{"a":}"#,
            r#"{"a":01}"#,
            r#"{"a":1.}"#,
            r#"{"a":1e}"#,
            r#"{"a":-}"#,
            r#"{"a":+1}"#,
            r#"{"a":.5}"#,
            r#"{"a":1,}"#,
            r#"[1,]"#,
            r#"[1 2]"#,
            r#"{"a" 1}"#,
            r#"{a:1}"#,
            r#"{"a":tru}"#,
            r#"{"a":nulll}"#,
            r#"{"a":"x\q"}"#,
            r#"{"a":"\u12"}"#,
            r#"{"a":"\u12g4"}"#,
            "{\"a\":\"ctl\u{1}\"}",
            r#"{"a":"open}"#,
            r#"{"a":"darn"} x"#,
            r#"{"a":1}}"#,
            r#"{"a":[1}"#,
            r#"{"a":"darn""#,
            &unclosed,
        ];
        for json in refused {
            assert!(
                matches!(filter().mask(json), Err(FilterError::Unreadable { .. })),
                "{json:?}"
            );
            assert!(serde_json::from_str::<&RawValue>(json).is_err(), "{json:?}");
        }
        assert_eq!(
            filter().mask(r#"{"a":"x\q"}"#).unwrap_err().to_string(),
            "the payload is not valid JSON (at byte 8), so the word filter cannot read it"
        );
    }

    #[test]
    fn what_is_refused_is_what_serde_refuses() {
        // Mutations of JSON texts, compared with serde's reading of them as one raw value.
        let seeds = [
            r#"{"a":[1,-2.5e+3,true,false,null,{"b":"x\u00e9\"y"}],"c":{}}"#,
            r#" [ "darn" , 0 , 1e400, "\ud83d\ude00", [] ] "#,
        ];
        let alphabet: Vec<char> = r#"{}[]",:\/ u0189abefAEF.+-tnrlsq"#
            .chars()
            .chain(['\u{1}', '\t', '\n', 'é'])
            .collect();
        let mut state = 0x2545_f491_u64;
        let mut next = |n: usize| {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            (state >> 33) as usize % n
        };
        let mut read = 0;
        for _ in 0..20_000 {
            let mut text: Vec<char> = seeds[next(seeds.len())].chars().collect();
            for _ in 0..1 + next(3) {
                let at = next(text.len() + 1);
                match next(3) {
                    0 if at < text.len() => {
                        text.remove(at);
                    }
                    1 if at < text.len() => text[at] = alphabet[next(alphabet.len())],
                    _ => text.insert(at, alphabet[next(alphabet.len())]),
                }
            }
            let text: String = text.into_iter().collect();
            let masked = filter().mask(&text);
            assert_eq!(
                masked.is_ok(),
                serde_json::from_str::<&RawValue>(&text).is_ok(),
                "{text:?}"
            );
            if let Ok(masked) = masked {
                read += 1;
                let out = masked.unwrap_or(text);
                assert!(serde_json::from_str::<&RawValue>(&out).is_ok(), "{out:?}");
            }
        }
        assert!((2_000..18_000).contains(&read), "{read} of 20,000 read");
    }

    #[test]
    fn words_beyond_ascii_match_whatever_their_case() {
        let filter = WordFilter::new(vec!["ärger".into(), "οδος".into()]);
        let raw =
            RawValue::from_string(r#"{"t":"So ein ÄRGER und Ärger, ärgerlich; ΟΔΟΣ οδοσ"}"#.into())
                .unwrap();
        assert_eq!(
            filter.apply(raw).unwrap().get(),
            r#"{"t":"So ein ***** und *****, ärgerlich; **** ****"}"#
        );
    }

    #[test]
    fn a_clean_payload_is_passed_on_as_it_came() {
        let json = r#"{ "text" : "fine words, darned", "darn": 1.50, "n": 1e400 }"#;
        let raw = RawValue::from_string(json.into()).unwrap();
        let at = raw.get().as_ptr();
        let out = filter().apply(raw).unwrap();
        assert_eq!(out.get(), json);
        assert_eq!(out.get().as_ptr(), at, "the same allocation");
        let empty = WordFilter::default();
        let raw = RawValue::from_string(r#"{"text":"darn"}"#.into()).unwrap();
        assert_eq!(empty.apply(raw).unwrap().get(), r#"{"text":"darn"}"#);
    }

    #[test]
    fn ten_thousand_listed_words_filter_a_16_kib_payload() {
        let words: Vec<String> = (0..10_000).map(|i| format!("bad{i}word")).collect();
        let filter = WordFilter::new(words);
        let mut json = String::from(r#"{"items":["#);
        let mut expected = json.clone();
        let mut i = 0;
        while json.len() < 16 * 1024 {
            let listed = format!("Bad{}WORD", i * 37 % 10_000);
            let stars = "*".repeat(listed.len());
            let item = format!(r#"{{"n":{i},"text":"say {listed} or bad{i}words, {listed}"}},"#);
            json.push_str(&item);
            expected.push_str(&item.replace(&listed, &stars));
            i += 1;
        }
        json.push_str(r#"{"end":true}]}"#);
        expected.push_str(r#"{"end":true}]}"#);
        let raw = RawValue::from_string(json).unwrap();
        assert_eq!(filter.apply(raw).unwrap().get(), expected);
    }
}
