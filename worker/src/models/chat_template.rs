//! Renders a model's own chat template (the Jinja string in `chat_template.json` or `tokenizer_config.json`)
//! the way transformers' `apply_chat_template` does: trim_blocks, lstrip_blocks, loop controls, Python string
//! methods, `raise_exception`, `strftime_now` and a `tojson` that keeps non-ASCII text.

use std::path::Path;

use minijinja::{Environment, Error as JinjaError, ErrorKind, Value};
use serde::Serialize;

#[derive(Debug, thiserror::Error)]
pub enum ChatTemplateError {
    #[error("model {model} has no chat template (looked in chat_template.json and tokenizer_config.json)")]
    Missing { model: String },
    #[error("cannot read the chat template in {path}: {message}")]
    Read { path: String, message: String },
    #[error("the chat template does not compile: {0}")]
    Compile(String),
    #[error("the chat template failed to render: {0}")]
    Render(String),
}

/// One content item of a message: text, or an image placeholder (rendered by the template, e.g. `<|image|>`).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Content {
    Text { text: String },
    Image,
    Video,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Message {
    pub role: String,
    pub content: Vec<Content>,
}

impl Message {
    pub fn user(content: Vec<Content>) -> Message {
        Message { role: "user".into(), content }
    }
    pub fn system(text: &str) -> Message {
        Message { role: "system".into(), content: vec![Content::Text { text: text.into() }] }
    }
}

/// A compiled chat template plus the special tokens it may refer to.
pub struct ChatTemplate {
    env: Environment<'static>,
    bos_token: String,
    eos_token: String,
}

impl std::fmt::Debug for ChatTemplate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChatTemplate").field("bos_token", &self.bos_token).finish_non_exhaustive()
    }
}

impl ChatTemplate {
    pub fn new(source: &str, bos_token: &str, eos_token: &str) -> Result<ChatTemplate, ChatTemplateError> {
        let mut env = Environment::new();
        env.set_trim_blocks(true);
        env.set_lstrip_blocks(true);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function("raise_exception", |message: String| -> Result<Value, JinjaError> {
            Err(JinjaError::new(ErrorKind::InvalidOperation, message))
        });
        env.add_function("strftime_now", |format: String| -> Result<Value, JinjaError> {
            Ok(Value::from(strftime_now(&format)))
        });
        env.add_filter("tojson", |value: Value| -> Result<String, JinjaError> {
            serde_json::to_string(&value).map_err(|e| JinjaError::new(ErrorKind::InvalidOperation, e.to_string()))
        });
        env.add_template_owned("chat", strip_generation_tags(source))
            .map_err(|e| ChatTemplateError::Compile(e.to_string()))?;
        Ok(ChatTemplate { env, bos_token: bos_token.into(), eos_token: eos_token.into() })
    }

    /// Finds the template of a model folder: `chat_template.json` (processor), else `tokenizer_config.json`.
    pub fn find_source(
        chat_template_json: Option<&Path>,
        tokenizer_config: Option<&Path>,
    ) -> Option<Result<String, ChatTemplateError>> {
        for path in [chat_template_json, tokenizer_config].into_iter().flatten() {
            let read = || -> Result<Option<String>, ChatTemplateError> {
                let error = |message: String| ChatTemplateError::Read { path: path.display().to_string(), message };
                let text = std::fs::read_to_string(path).map_err(|e| error(e.to_string()))?;
                let json: serde_json::Value = serde_json::from_str(&text).map_err(|e| error(e.to_string()))?;
                Ok(match json.get("chat_template") {
                    Some(serde_json::Value::String(template)) => Some(template.clone()),
                    // A list of named templates: take "default".
                    Some(serde_json::Value::Array(named)) => named
                        .iter()
                        .find(|t| t.get("name").and_then(|n| n.as_str()) == Some("default"))
                        .and_then(|t| t.get("template")?.as_str().map(str::to_string)),
                    _ => None,
                })
            };
            match read() {
                Ok(Some(template)) => return Some(Ok(template)),
                Ok(None) => continue,
                Err(e) => return Some(Err(e)),
            }
        }
        None
    }

    /// The prompt text for `messages`, ending with the assistant header when `add_generation_prompt`.
    /// `date_string` pins the date some templates print (Llama 3.2 prints "Today Date").
    pub fn render(
        &self,
        messages: &[Message],
        add_generation_prompt: bool,
        date_string: Option<&str>,
    ) -> Result<String, ChatTemplateError> {
        let template = self.env.get_template("chat").map_err(|e| ChatTemplateError::Render(e.to_string()))?;
        let mut context = serde_json::json!({
            "messages": messages,
            "add_generation_prompt": add_generation_prompt,
            "bos_token": self.bos_token,
            "eos_token": self.eos_token,
        });
        if let Some(date) = date_string {
            context["date_string"] = serde_json::Value::from(date);
        }
        template.render(Value::from_serialize(&context)).map_err(|e| ChatTemplateError::Render(format!("{e:#}")))
    }
}

/// Removes `{% generation %}` / `{% endgeneration %}` (with any `-` whitespace control): transformers' jinja
/// extension (`AssistantTracker`) renders their body unchanged and only records where it is, for assistant masks.
fn strip_generation_tags(source: &str) -> String {
    let mut out = String::with_capacity(source.len());
    let mut rest = source;
    while let Some(start) = rest.find("{%") {
        let Some(end) = rest[start..].find("%}").map(|e| start + e + 2) else { break };
        let inner = rest[start + 2..end - 2].trim_matches(|c: char| c == '-' || c == '+' || c.is_whitespace());
        out.push_str(&rest[..start]);
        if inner != "generation" && inner != "endgeneration" {
            out.push_str(&rest[start..end]);
        }
        rest = &rest[end..];
    }
    out.push_str(rest);
    out
}

/// `datetime.now().strftime(format)` for the formats chat templates use (%d %b %Y %m %B %y %H %M %S).
fn strftime_now(format: &str) -> String {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    strftime(format, now as i64)
}

fn strftime(format: &str, unix_seconds: i64) -> String {
    const MONTHS: [&str; 12] = [
        "January",
        "February",
        "March",
        "April",
        "May",
        "June",
        "July",
        "August",
        "September",
        "October",
        "November",
        "December",
    ];
    let days = unix_seconds.div_euclid(86400);
    let seconds = unix_seconds.rem_euclid(86400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719468;
    let era = z.div_euclid(146097);
    let doe = z - era * 146097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let mut out = String::new();
    let mut chars = format.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('d') => out.push_str(&format!("{day:02}")),
            Some('m') => out.push_str(&format!("{month:02}")),
            Some('Y') => out.push_str(&year.to_string()),
            Some('y') => out.push_str(&format!("{:02}", year % 100)),
            Some('b') => out.push_str(&MONTHS[(month - 1) as usize][..3]),
            Some('B') => out.push_str(MONTHS[(month - 1) as usize]),
            Some('H') => out.push_str(&format!("{:02}", seconds / 3600)),
            Some('M') => out.push_str(&format!("{:02}", seconds % 3600 / 60)),
            Some('S') => out.push_str(&format!("{:02}", seconds % 60)),
            Some('%') => out.push('%'),
            Some(other) => {
                out.push('%');
                out.push(other);
            }
            None => out.push('%'),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strftime_formats_dates_like_python() {
        // 2024-07-26 13:34:56 UTC
        assert_eq!(strftime("%d %b %Y", 1722000896), "26 Jul 2024");
        assert_eq!(strftime("%Y-%m-%d %H:%M:%S", 1722000896), "2024-07-26 13:34:56");
        assert_eq!(strftime("%d %B %y", 0), "01 January 70");
    }

    #[test]
    fn templates_trim_blocks_and_support_python_string_methods() {
        let source = "{% for m in messages %}{{ m.role | upper }}: {{ m.content[0].text.strip() }}\n{% endfor %}\
                      {% if add_generation_prompt %}ASSISTANT:{% endif %}";
        let template = ChatTemplate::new(source, "<s>", "</s>").unwrap();
        let messages = [Message::user(vec![Content::Text { text: "  hi  ".into() }])];
        assert_eq!(template.render(&messages, true, None).unwrap(), "USER: hi\nASSISTANT:");
    }

    #[test]
    fn generation_blocks_render_their_body() {
        let source = "{% for m in messages %}{%- generation -%}[{{ m.role }}]{% endgeneration %}{% endfor %}";
        let template = ChatTemplate::new(source, "", "").unwrap();
        let messages = [Message::user(vec![Content::Video])];
        assert_eq!(template.render(&messages, false, None).unwrap(), "[user]");
    }

    #[test]
    fn raise_exception_fails_the_render_with_its_message() {
        let template = ChatTemplate::new("{{ raise_exception('only user and assistant') }}", "", "").unwrap();
        let error = template.render(&[], false, None).unwrap_err();
        assert!(error.to_string().contains("only user and assistant"));
    }

    #[test]
    fn image_items_render_through_the_template() {
        let source = "{% for c in messages[0].content %}{% if c.type == 'image' %}<|image|>{% else %}{{ c.text }}{% endif %}{% endfor %}";
        let template = ChatTemplate::new(source, "", "").unwrap();
        let messages = [Message::user(vec![Content::Image, Content::Text { text: "Describe.".into() }])];
        assert_eq!(template.render(&messages, false, None).unwrap(), "<|image|>Describe.");
    }
}
