//! Chat templates: the Jinja text a GGUF carries as `tokenizer.chat_template` (ChatML
//! when it has none), compiled once and rendered for each conversation.

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
