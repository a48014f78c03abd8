//! The conversation a chat answers: parsed from a client's roles and texts, and
//! checked before anything is searched or generated.

use crate::domain::{Message, Role};
use crate::services::ServiceError;

/// Messages a conversation may have.
const MAX_MESSAGES: usize = 256;

/// A conversation as a client sent it: each role checked against [`Role`], then the
/// same checks as [`prepare`] makes, in the same order (count, each message's role and
/// text, the last speaker), so a refusal names the first fault.
pub fn parse_messages(
    raw: impl IntoIterator<Item = (String, String)>,
) -> Result<Vec<Message>, ServiceError> {
    let raw: Vec<(String, String)> = raw.into_iter().collect();
    check_count(raw.len())?;
    let mut messages = Vec::with_capacity(raw.len());
    for (i, (role, content)) in raw.into_iter().enumerate() {
        let role =
            Role::parse(&role).map_err(|e| ServiceError::Invalid(format!("messages[{i}].{e}")))?;
        let message = Message { role, content };
        check_content(i, &message)?;
        messages.push(message);
    }
    check_last(&messages)?;
    Ok(messages)
}

pub(super) fn validate(messages: &[Message]) -> Result<(), ServiceError> {
    check_count(messages.len())?;
    for (i, m) in messages.iter().enumerate() {
        check_content(i, m)?;
    }
    check_last(messages)
}

fn check_count(n: usize) -> Result<(), ServiceError> {
    if n == 0 {
        return Err(ServiceError::Invalid("messages must not be empty".into()));
    }
    if n > MAX_MESSAGES {
        return Err(ServiceError::Invalid(format!(
            "messages holds at most {MAX_MESSAGES} messages"
        )));
    }
    Ok(())
}

fn check_content(i: usize, m: &Message) -> Result<(), ServiceError> {
    if m.content.trim().is_empty() {
        return Err(ServiceError::Invalid(format!(
            "messages[{i}].content must not be empty"
        )));
    }
    Ok(())
}

fn check_last(messages: &[Message]) -> Result<(), ServiceError> {
    if messages.last().map(|m| m.role) != Some(Role::User) {
        return Err(ServiceError::Invalid(
            "the last message must be the user's".into(),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(role: Role, content: &str) -> Message {
        Message::new(role, content)
    }

    fn parse(raw: &[(&str, &str)]) -> Result<Vec<Message>, String> {
        let raw = raw.iter().map(|(r, c)| (r.to_string(), c.to_string()));
        parse_messages(raw).map_err(|e| match e {
            ServiceError::Invalid(m) => m,
            other => panic!("{other:?}"),
        })
    }

    #[test]
    fn messages_are_parsed_and_validated() {
        assert_eq!(parse(&[]).unwrap_err(), "messages must not be empty");
        assert_eq!(
            parse(&[("robot", "hi")]).unwrap_err(),
            "messages[0].role `robot` is not one of system, user, assistant"
        );
        assert_eq!(
            parse(&[("user", "  ")]).unwrap_err(),
            "messages[0].content must not be empty"
        );
        // The first fault is named: an empty text before a bad role.
        assert_eq!(
            parse(&[("user", ""), ("robot", "hi")]).unwrap_err(),
            "messages[0].content must not be empty"
        );
        assert_eq!(
            parse(&[("user", "hi"), ("assistant", "hello")]).unwrap_err(),
            "the last message must be the user's"
        );
        let ok = parse(&[("system", "be brief"), ("user", "hi")]).unwrap();
        assert_eq!(ok, [msg(Role::System, "be brief"), msg(Role::User, "hi")]);
        assert!(validate(&ok).is_ok());
        assert!(validate(&[msg(Role::User, "  ")]).is_err());
        assert!(validate(&[]).is_err());
    }
}
