//! The filter stage a client publish passes before its hook (or without one): words from
//! `--publish-filter-words` masked with `*` in every string of the payload, keys included, as
//! whole words and whatever their case. It runs on the node, so the common case of a chat
//! room's word list needs no backend and costs no round trip.

use serde_json::Value;
use serde_json::value::RawValue;

/// The words to mask, lowercased.
#[derive(Default)]
pub struct WordFilter {
    words: Vec<String>,
}

impl WordFilter {
    pub fn new(words: Vec<String>) -> WordFilter {
        WordFilter { words }
    }

    pub fn is_empty(&self) -> bool {
        self.words.is_empty()
    }

    /// `payload` (a JSON object) with every listed word masked; the same text when none is in
    /// it.
    pub fn apply(&self, payload: Box<RawValue>) -> Box<RawValue> {
        if self.words.is_empty() {
            return payload;
        }
        let Ok(mut value) = serde_json::from_str::<Value>(payload.get()) else {
            return payload;
        };
        if !self.mask_value(&mut value) {
            return payload;
        }
        serde_json::value::to_raw_value(&value).unwrap_or(payload)
    }

    /// Masks every string in `value`; whether anything changed.
    fn mask_value(&self, value: &mut Value) -> bool {
        match value {
            Value::String(text) => match self.mask(text) {
                Some(masked) => {
                    *text = masked;
                    true
                }
                None => false,
            },
            Value::Array(items) => items
                .iter_mut()
                .fold(false, |changed, v| self.mask_value(v) | changed),
            Value::Object(fields) => {
                let mut changed = false;
                let masked: serde_json::Map<String, Value> = std::mem::take(fields)
                    .into_iter()
                    .map(|(key, mut v)| {
                        changed |= self.mask_value(&mut v);
                        let key = match self.mask(&key) {
                            Some(masked) => {
                                changed = true;
                                masked
                            }
                            None => key,
                        };
                        (key, v)
                    })
                    .collect();
                *fields = masked;
                changed
            }
            _ => false,
        }
    }

    /// `text` with its listed words masked, if it has any.
    fn mask(&self, text: &str) -> Option<String> {
        let mut out = String::with_capacity(text.len());
        let mut changed = false;
        let mut rest = text;
        while !rest.is_empty() {
            // Runs of word characters and of the others, in turn.
            let word = rest.starts_with(|c: char| c.is_alphanumeric());
            let end = rest
                .find(|c: char| c.is_alphanumeric() != word)
                .unwrap_or(rest.len());
            let (run, after) = rest.split_at(end);
            if word && self.words.iter().any(|w| w == &run.to_lowercase()) {
                out.extend(std::iter::repeat_n('*', run.chars().count()));
                changed = true;
            } else {
                out.push_str(run);
            }
            rest = after;
        }
        changed.then_some(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn filter() -> WordFilter {
        WordFilter::new(vec!["darn".into(), "heck".into()])
    }

    fn apply(json: &str) -> String {
        let raw = RawValue::from_string(json.into()).unwrap();
        filter().apply(raw).get().to_owned()
    }

    #[test]
    fn listed_words_are_masked_anywhere_in_the_payload_whatever_their_case() {
        let out: Value = serde_json::from_str(&apply(
            r#"{"text":"Darn it, what the HECK!","nested":[{"heck":"darned fine"}]}"#,
        ))
        .unwrap();
        assert_eq!(out["text"], "**** it, what the ****!");
        assert_eq!(out["nested"][0]["****"], "darned fine", "only whole words");
    }

    #[test]
    fn a_clean_payload_is_passed_on_as_it_came() {
        let json = r#"{ "text" : "fine words", "n": 1.50 }"#;
        assert_eq!(apply(json), json);
        let empty = WordFilter::default();
        let raw = RawValue::from_string(r#"{"text":"darn"}"#.into()).unwrap();
        assert_eq!(empty.apply(raw).get(), r#"{"text":"darn"}"#);
    }
}
