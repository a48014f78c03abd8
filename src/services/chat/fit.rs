//! Fitting a conversation into the model's context. A conversation too long for it is
//! cut, never refused: the oldest turns go first (the caller's own system messages
//! last), then the end of the instructions, then the start of the last message, so the
//! newest words are what the model answers. Bytes are cut first, which bounds the
//! tokenizer's work; then tokens, each cut checked by a real count.

use super::{Budget, ServiceError};
use crate::domain::{Message, Role};

/// Tokens a message's framing takes in a chat template, at most (role markers, breaks).
const FRAMING: usize = 8;

/// Rounds of cutting before giving up; each round at least halves what is over.
const MAX_ROUNDS: usize = 48;

/// The instructions and the conversation, as they will be rendered.
pub(super) struct Conversation {
    pub(super) system_prompt: String,
    pub(super) messages: Vec<Message>,
}

impl Conversation {
    fn bytes(&self) -> usize {
        self.system_prompt.len() + self.messages.iter().map(|m| m.content.len()).sum::<usize>()
    }

    /// Cuts at least `excess` (as `measure` counts) or all that may go; whether anything
    /// was cut.
    fn cut(&mut self, mut excess: usize, measure: &dyn Fn(&str) -> usize) -> bool {
        let mut changed = false;
        for system in [false, true] {
            while excess > 0 && self.messages.len() > 1 {
                let last = self.messages.len() - 1;
                let Some(i) = self.messages[..last]
                    .iter()
                    .position(|m| (m.role == Role::System) == system)
                else {
                    break;
                };
                let gone = self.messages.remove(i);
                excess = excess.saturating_sub(measure(&gone.content) + FRAMING);
                changed = true;
            }
        }
        if excess > 0 && !self.system_prompt.is_empty() {
            excess = excess.saturating_sub(shorten(&mut self.system_prompt, excess, measure, End));
            changed = true;
        }
        if excess > 0
            && let Some(last) = self.messages.last_mut()
            && !last.content.is_empty()
        {
            shorten(&mut last.content, excess, measure, Start);
            changed = true;
        }
        changed
    }
}

/// Which end of a text is kept.
#[derive(Clone, Copy)]
enum Side {
    Start,
    End,
}
use Side::{End, Start};

/// Cuts about `excess` (in `measure`'s unit, at least one character) from `text`,
/// keeping its start (`End` cuts the end) or its end; returns what `measure` says went.
fn shorten(text: &mut String, excess: usize, measure: &dyn Fn(&str) -> usize, cut: Side) -> usize {
    let before = measure(text);
    let chars = text.chars().count();
    // Characters per unit of this text, to turn the excess into characters.
    let drop = if before <= excess {
        chars
    } else {
        (excess * chars).div_ceil(before.max(1)).clamp(1, chars)
    };
    let keep = chars - drop;
    *text = match cut {
        End => text.chars().take(keep).collect(),
        Start => text.chars().skip(drop).collect(),
    };
    before.saturating_sub(measure(text))
}

/// Fits `conv` into `limit` tokens (`max_bytes` bytes first); its token count, and
/// whether anything was cut.
pub(super) async fn fit(
    budget: &Budget<'_>,
    conv: &mut Conversation,
    limit: usize,
    max_bytes: usize,
) -> Result<(usize, bool), ServiceError> {
    let mut cut = false;
    let bytes = conv.bytes();
    if bytes > max_bytes {
        cut |= conv.cut(bytes - max_bytes, &|t: &str| t.len());
    }
    for _ in 0..MAX_ROUNDS {
        let bare = super::conversation(&conv.system_prompt, &[], &conv.messages);
        let tokens = budget.count(bare).await?;
        if tokens <= limit {
            return Ok((tokens, cut));
        }
        let generator = budget.generator;
        if !conv.cut(tokens - limit, &|t: &str| generator.count_tokens(t)) {
            break;
        }
        cut = true;
    }
    Err(ServiceError::Invalid(format!(
        "the model's context of {} tokens cannot hold even the shortest form of this \
         conversation",
        budget.context()
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conv(system: &str, messages: &[(Role, &str)]) -> Conversation {
        Conversation {
            system_prompt: system.into(),
            messages: messages.iter().map(|(r, c)| Message::new(*r, *c)).collect(),
        }
    }

    fn bytes(t: &str) -> usize {
        t.len()
    }

    #[test]
    fn the_oldest_turns_go_first_and_the_last_message_stays() {
        let mut c = conv(
            "rules",
            &[
                (Role::System, "be brief"),
                (Role::User, "aaaaaaaaaa"),
                (Role::Assistant, "bbbbbbbbbb"),
                (Role::User, "question"),
            ],
        );
        assert!(c.cut(5, &bytes));
        let left: Vec<&str> = c.messages.iter().map(|m| m.content.as_str()).collect();
        assert_eq!(left, ["be brief", "bbbbbbbbbb", "question"]);
        assert!(c.cut(30, &bytes));
        let left: Vec<&str> = c.messages.iter().map(|m| m.content.as_str()).collect();
        assert_eq!(left, ["question"], "the caller's system message goes last");
        assert_eq!(c.system_prompt, "rules");
    }

    #[test]
    fn then_the_instructions_end_then_the_last_messages_start() {
        let mut c = conv("0123456789", &[(Role::User, "abcdefghij")]);
        assert!(c.cut(4, &bytes));
        assert_eq!(c.system_prompt, "012345");
        assert_eq!(c.messages[0].content, "abcdefghij");
        assert!(c.cut(8, &bytes));
        assert_eq!(c.system_prompt, "");
        assert_eq!(c.messages[0].content, "cdefghij", "its newest words stay");
        let mut empty = conv("", &[(Role::User, "")]);
        assert!(!empty.cut(3, &bytes), "nothing left to cut");
    }

    #[test]
    fn shortening_counts_characters_not_bytes() {
        let mut t = String::from("ééééé");
        let gone = shorten(&mut t, 4, &bytes, Start);
        assert_eq!(t, "ééé");
        assert_eq!(gone, 4);
    }
}
