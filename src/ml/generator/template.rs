//! Chat templates: the Jinja text a GGUF carries as `tokenizer.chat_template` (ChatML
//! when it has none), compiled once and rendered for each conversation the way Hugging
//! Face renders them: blocks trimmed, and the Python string methods (`.strip()`,
//! `.startswith()`, `.split()`…) that their templates call available.

use minijinja::{Environment, Error, ErrorKind};

use crate::domain::{GenError, Message};

/// A chat template for GGUFs that carry none: ChatML.
const CHATML: &str = "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}";

/// A compiled chat template and the special-token texts it may print.
pub(super) struct ChatTemplate {
    env: Environment<'static>,
    bos: String,
    eos: String,
}

impl ChatTemplate {
    /// Compiles `source` (ChatML when `None`); `bos` and `eos` are the texts of the
    /// model's begin and end tokens, which templates print as `bos_token` and
    /// `eos_token`.
    pub(super) fn new(
        source: Option<String>,
        bos: Option<String>,
        eos: Option<String>,
    ) -> Result<Self, GenError> {
        let mut env = Environment::new();
        env.set_trim_blocks(true);
        env.set_lstrip_blocks(true);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function("raise_exception", raise_exception);
        env.add_template_owned("chat", source.unwrap_or_else(|| CHATML.to_owned()))
            .map_err(|e| GenError::Load(format!("the GGUF's chat template: {e}")))?;
        Ok(Self {
            env,
            bos: bos.unwrap_or_default(),
            eos: eos.unwrap_or_default(),
        })
    }

    /// The prompt for a conversation, ready for the assistant's answer.
    pub(super) fn render(&self, messages: &[Message]) -> Result<String, GenError> {
        let rendering = |e: Error| GenError::Compute(format!("rendering the chat template: {e}"));
        let template = self.env.get_template("chat").map_err(rendering)?;
        template
            .render(minijinja::context! {
                messages => messages,
                add_generation_prompt => true,
                bos_token => &self.bos,
                eos_token => &self.eos,
            })
            .map_err(rendering)
    }
}

/// `raise_exception(msg)`, which templates call to refuse a conversation they cannot
/// render (e.g. roles out of order).
fn raise_exception(msg: String) -> Result<String, Error> {
    Err(Error::new(ErrorKind::InvalidOperation, msg))
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;
    use crate::domain::Role;

    /// llama.cpp's collection of real models' templates, which
    /// `scripts/llama_server_venv.sh` unpacks; `RAGBOX_TEST_TEMPLATES` points elsewhere.
    fn real(name: &str, bos: &str, eos: &str) -> ChatTemplate {
        let dir = std::env::var_os("RAGBOX_TEST_TEMPLATES").map_or_else(
            || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".venv-llama/templates"),
            PathBuf::from,
        );
        let path = dir.join(name);
        let source = std::fs::read_to_string(&path).unwrap_or_else(|e| {
            panic!(
                "chat template {}: {e}. Run scripts/llama_server_venv.sh, which unpacks \
                 llama.cpp's templates into .venv-llama/templates (or set \
                 RAGBOX_TEST_TEMPLATES to a folder holding them)",
                path.display()
            )
        });
        ChatTemplate::new(Some(source), Some(bos.into()), Some(eos.into())).unwrap()
    }

    fn conversation() -> Vec<Message> {
        vec![
            Message::new(Role::System, "Be brief."),
            Message::new(Role::User, "What is 2+2?"),
            Message::new(Role::Assistant, "<think>\nAdd them.\n</think>\n\n4"),
            Message::new(Role::User, "And 3+3?"),
        ]
    }

    #[test]
    fn without_a_template_chatml_is_used() {
        let t = ChatTemplate::new(None, None, None).unwrap();
        let prompt = t.render(&conversation()[..2]).unwrap();
        assert_eq!(
            prompt,
            "<|im_start|>system\nBe brief.<|im_end|>\n\
             <|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n"
        );
    }

    #[test]
    fn a_template_may_refuse_a_conversation() {
        let source =
            "{% if messages[0].role != 'user' %}{{ raise_exception('users first') }}{% endif %}";
        let t = ChatTemplate::new(Some(source.into()), None, None).unwrap();
        let err = t.render(&conversation()).unwrap_err().to_string();
        assert!(err.contains("users first"), "{err}");
        assert!(ChatTemplate::new(Some("{% if %}".into()), None, None).is_err());
    }

    #[test]
    fn qwen3_renders_with_its_string_methods() {
        // `.startswith()`/`.endswith()` on every user turn, `.split()`, `.lstrip()` and
        // `.rstrip()` on the assistant's, whose reasoning is dropped from past turns.
        let t = real("Qwen-Qwen3-0.6B.jinja", "", "<|im_end|>");
        assert_eq!(
            t.render(&conversation()[..2]).unwrap(),
            "<|im_start|>system\nBe brief.<|im_end|>\n\
             <|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n"
        );
        assert_eq!(
            t.render(&conversation()).unwrap(),
            "<|im_start|>system\nBe brief.<|im_end|>\n\
             <|im_start|>user\nWhat is 2+2?<|im_end|>\n\
             <|im_start|>assistant\n4<|im_end|>\n\
             <|im_start|>user\nAnd 3+3?<|im_end|>\n<|im_start|>assistant\n"
        );
    }

    #[test]
    fn deepseek_r1_renders_with_its_string_methods() {
        // The system text follows the BOS bare; `.split('</think>')` drops the past
        // reasoning; the answer starts with an open <think>.
        let t = real(
            "deepseek-ai-DeepSeek-R1-Distill-Llama-8B.jinja",
            "<｜begin▁of▁sentence｜>",
            "<｜end▁of▁sentence｜>",
        );
        assert_eq!(
            t.render(&conversation()[..2]).unwrap(),
            "<｜begin▁of▁sentence｜>Be brief.<｜User｜>What is 2+2?<｜Assistant｜><think>\n"
        );
        assert_eq!(
            t.render(&conversation()).unwrap(),
            "<｜begin▁of▁sentence｜>Be brief.<｜User｜>What is 2+2?\
             <｜Assistant｜>\n\n4<｜end▁of▁sentence｜><｜User｜>And 3+3?<｜Assistant｜><think>\n"
        );
    }
}
