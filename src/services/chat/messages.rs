//! The conversation a chat answers, checked before anything is searched or generated.
//!
//! Only its size is refused here: any roles in any order and any texts (empty ones
//! included) make a conversation the model can continue, as OpenAI's API takes them. A
//! conversation too long for the model's context is refused where it is measured.

use crate::domain::{Message, Role};
use crate::services::ServiceError;

/// Messages a conversation may have.
pub const MAX_MESSAGES: usize = 256;

pub(super) fn validate(messages: &[Message]) -> Result<(), ServiceError> {
    if messages.is_empty() {
        return Err(ServiceError::Invalid("messages must not be empty".into()));
    }
    if messages.len() > MAX_MESSAGES {
        return Err(ServiceError::Invalid(format!(
            "messages holds at most {MAX_MESSAGES} messages"
        )));
    }
    Ok(())
}

/// The question retrieval searches for: the last user message, unless it is blank.
pub(super) fn question(messages: &[Message]) -> Option<&str> {
    messages
        .iter()
        .rev()
        .find(|m| m.role == Role::User)
        .map(|m| m.content.as_str())
        .filter(|q| !q.trim().is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(role: Role, content: &str) -> Message {
        Message::new(role, content)
    }

    #[test]
    fn only_the_size_of_a_conversation_is_refused() {
        assert!(validate(&[]).is_err());
        assert!(validate(&vec![msg(Role::User, "hi"); MAX_MESSAGES + 1]).is_err());
        assert!(validate(&[msg(Role::User, "")]).is_ok());
        assert!(validate(&[msg(Role::User, "hi"), msg(Role::Assistant, "Hello")]).is_ok());
    }

    #[test]
    fn the_question_is_the_last_users_words_when_there_are_any() {
        let talk = [
            msg(Role::User, "first"),
            msg(Role::Assistant, "answer"),
            msg(Role::User, "second"),
            msg(Role::Assistant, "partial"),
        ];
        assert_eq!(question(&talk), Some("second"));
        assert_eq!(question(&[msg(Role::User, "  ")]), None);
        assert_eq!(question(&[msg(Role::System, "be brief")]), None);
    }
}
