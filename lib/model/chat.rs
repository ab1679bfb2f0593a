//! Chat templates: the Jinja program in a model directory that turns a list of messages into the
//! prompt text, rendered byte for byte as transformers' `apply_chat_template` renders it.
//!
//! transformers compiles the template in a sandboxed Jinja2 environment with `trim_blocks`,
//! `lstrip_blocks` and loop controls, overrides `tojson` (plain `json.dumps`, no HTML escaping,
//! non-ASCII kept), adds `raise_exception`, and passes `messages`, `tools` (none unless given),
//! `documents` (none), `add_generation_prompt`, the special tokens (`bos_token`,
//! `eos_token`, `pad_token`, `unk_token`) and any extra keyword (Qwen3's `enable_thinking`). It
//! also copies a message's reasoning given as `reasoning` or `thinking` to `reasoning_content`
//! (and the first to `thinking`). We do the same with minijinja, plus minijinja-contrib's
//! Python string and dict methods (`.strip()`, `.startswith()`, `.items()`, ...), which Qwen-style
//! templates call. Qwen3's shipped template (thinking blocks, `enable_thinking`, tool calls and
//! responses, `messages[::-1]`, `namespace`) renders byte for byte as transformers renders it
//! (tests/model_io.rs, fixtures by scripts/make_qwen3_chat_cases.py).
//!
//! Departures from transformers, none of which SmolLM2's or Qwen2.5's templates touch:
//! - maps iterate in key order, not insertion order, so `tojson` of a tool schema sorts its keys;
//! - `strftime_now` (Llama 3.1's templates) is not provided: such a template fails with a
//!   clear error instead of rendering a date.

use std::path::{Path, PathBuf};

use minijinja::value::{Kwargs, Value};
use minijinja::{Environment, Error, ErrorKind};
use serde::Serialize;

/// Errors of finding, compiling and rendering a chat template.
#[derive(Debug, thiserror::Error)]
pub enum ChatError {
    /// Neither `chat_template.jinja` nor a `chat_template` key in `tokenizer_config.json`.
    #[error("no chat template in {0} (looked for chat_template.jinja and tokenizer_config.json's chat_template)")]
    Missing(PathBuf),
    /// A file could not be read or parsed.
    #[error("reading {path}: {message}")]
    Read { path: PathBuf, message: String },
    /// `chat_template` is a list of named templates without one named `default`.
    #[error("tokenizer_config.json has named chat templates {names:?} but none named 'default'")]
    NoDefault { names: Vec<String> },
    /// The template is not valid Jinja.
    #[error("chat template does not compile: {0:#}")]
    Compile(Error),
    /// Rendering failed: an undefined attribute, a `raise_exception`, a type error, ...
    #[error("chat template failed to render: {0:#}")]
    Render(Error),
}

/// One chat message, as the templates read it (`message['role']`, `message['content']`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct ChatMessage {
    pub role: String,
    pub content: String,
}

impl ChatMessage {
    pub fn new(role: impl Into<String>, content: impl Into<String>) -> Self {
        Self {
            role: role.into(),
            content: content.into(),
        }
    }
}

/// What `apply_chat_template` passes beside the messages: tool schemas (`tools`) and extra
/// template variables (`{"enable_thinking": false}` for Qwen3's non-thinking prompts).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RenderExtras {
    pub tools: Option<serde_json::Value>,
    pub vars: serde_json::Map<String, serde_json::Value>,
}

/// The special tokens a template may print; `None` ones stay undefined, as in transformers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SpecialTokens {
    pub bos_token: Option<String>,
    pub eos_token: Option<String>,
    pub pad_token: Option<String>,
    pub unk_token: Option<String>,
}

impl SpecialTokens {
    /// Reads them from a `tokenizer_config.json` value, where each is a string or an
    /// `{"content": ...}` object.
    pub fn from_tokenizer_config(config: &serde_json::Value) -> Self {
        let get = |key: &str| match config.get(key) {
            Some(serde_json::Value::String(s)) => Some(s.clone()),
            Some(serde_json::Value::Object(o)) => {
                o.get("content").and_then(|c| c.as_str()).map(String::from)
            }
            _ => None,
        };
        Self {
            bos_token: get("bos_token"),
            eos_token: get("eos_token"),
            pad_token: get("pad_token"),
            unk_token: get("unk_token"),
        }
    }
}

const TEMPLATE_NAME: &str = "chat_template";

/// A compiled chat template with the special tokens it is rendered with.
pub struct ChatTemplate {
    env: Environment<'static>,
    source: String,
    special: SpecialTokens,
}

impl std::fmt::Debug for ChatTemplate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChatTemplate")
            .field("source", &self.source)
            .field("special", &self.special)
            .finish()
    }
}

impl ChatTemplate {
    /// Compiles `source` in a transformers-like environment.
    pub fn new(source: impl Into<String>, special: SpecialTokens) -> Result<Self, ChatError> {
        let source = source.into();
        let mut env = Environment::new();
        env.set_trim_blocks(true);
        env.set_lstrip_blocks(true);
        env.set_keep_trailing_newline(false);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_filter("tojson", tojson);
        env.add_function(
            "raise_exception",
            |message: String| -> Result<Value, Error> {
                Err(Error::new(ErrorKind::InvalidOperation, message))
            },
        );
        env.add_template_owned(TEMPLATE_NAME, source.clone())
            .map_err(ChatError::Compile)?;
        Ok(Self {
            env,
            source,
            special,
        })
    }

    /// The template of a model directory: `chat_template.jinja` if present (as transformers
    /// prefers it), else `tokenizer_config.json`'s `chat_template` (a string, or a list of
    /// `{name, template}` of which `default` is taken). Special tokens come from
    /// `tokenizer_config.json`.
    pub fn from_dir(dir: &Path) -> Result<Self, ChatError> {
        let config_path = dir.join("tokenizer_config.json");
        let config = if config_path.is_file() {
            read_json(&config_path)?
        } else {
            serde_json::Value::Null
        };
        let special = SpecialTokens::from_tokenizer_config(&config);
        let jinja = dir.join("chat_template.jinja");
        if jinja.is_file() {
            let source = std::fs::read_to_string(&jinja).map_err(|e| ChatError::Read {
                path: jinja.clone(),
                message: e.to_string(),
            })?;
            return Self::new(source, special);
        }
        match template_in_config(&config)? {
            Some(source) => Self::new(source, special),
            None => Err(ChatError::Missing(dir.to_path_buf())),
        }
    }

    /// The template text.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// The special tokens it is rendered with.
    pub fn special_tokens(&self) -> &SpecialTokens {
        &self.special
    }

    /// Renders `messages`; `add_generation_prompt` appends the assistant header
    /// (`<|im_start|>assistant\n`) that a prompt for sampling ends with.
    pub fn render(
        &self,
        messages: &[ChatMessage],
        add_generation_prompt: bool,
    ) -> Result<String, ChatError> {
        self.render_value(Value::from_serialize(messages), add_generation_prompt)
    }

    /// As [`Self::render`] for messages of any shape (tool calls, content lists, ...).
    pub fn render_value(
        &self,
        messages: Value,
        add_generation_prompt: bool,
    ) -> Result<String, ChatError> {
        self.render_with(messages, add_generation_prompt, &RenderExtras::default())
    }

    /// As [`Self::render_value`] with tool schemas and extra template variables, as
    /// `apply_chat_template(messages, tools=..., **vars)` passes them.
    pub fn render_with(
        &self,
        messages: Value,
        add_generation_prompt: bool,
        extras: &RenderExtras,
    ) -> Result<String, ChatError> {
        let s = &self.special;
        let token = |t: &Option<String>| t.as_deref().map(Value::from).unwrap_or(Value::UNDEFINED);
        let mut ctx: std::collections::BTreeMap<String, Value> = extras
            .vars
            .iter()
            .map(|(k, v)| (k.clone(), Value::from_serialize(v)))
            .collect();
        for (k, v) in [
            ("messages", alias_reasoning(messages)),
            ("tools", extras.tools.as_ref().map(Value::from_serialize).unwrap_or(Value::from(()))),
            ("documents", Value::from(())),
            ("add_generation_prompt", Value::from(add_generation_prompt)),
            ("bos_token", token(&s.bos_token)),
            ("eos_token", token(&s.eos_token)),
            ("pad_token", token(&s.pad_token)),
            ("unk_token", token(&s.unk_token)),
        ] {
            ctx.insert(k.to_string(), v);
        }
        let ctx = Value::from(ctx);
        let template = self
            .env
            .get_template(TEMPLATE_NAME)
            .map_err(ChatError::Compile)?;
        template.render(ctx).map_err(ChatError::Render)
    }
}

/// transformers' `_alias_reasoning_fields`: a message whose reasoning is given as
/// `reasoning_content`, `thinking` or `reasoning` (the first non-null, in that order) gets it as
/// `reasoning_content`, and as `thinking` unless it has its own. Other values pass unchanged.
fn alias_reasoning(messages: Value) -> Value {
    let Ok(serde_json::Value::Array(list)) = serde_json::to_value(&messages) else {
        return messages;
    };
    let aliased: Vec<serde_json::Value> = list
        .into_iter()
        .map(|mut m| {
            if let serde_json::Value::Object(o) = &mut m {
                let reasoning = ["reasoning_content", "thinking", "reasoning"]
                    .iter()
                    .find_map(|k| o.get(*k).filter(|v| !v.is_null()).cloned());
                if let Some(r) = reasoning {
                    o.entry("thinking").or_insert_with(|| r.clone());
                    o.insert("reasoning_content".into(), r);
                }
            }
            m
        })
        .collect();
    Value::from_serialize(&aliased)
}

/// The `chat_template` of a `tokenizer_config.json` value: a string, or a list of named templates
/// of which `default` is taken; `None` when the key is absent or null.
pub fn template_in_config(config: &serde_json::Value) -> Result<Option<String>, ChatError> {
    match config.get("chat_template") {
        Some(serde_json::Value::String(s)) => Ok(Some(s.clone())),
        Some(serde_json::Value::Array(list)) => {
            let name =
                |t: &serde_json::Value| t.get("name").and_then(|n| n.as_str()).map(String::from);
            let default = list.iter().find(|t| name(t).as_deref() == Some("default"));
            match default
                .and_then(|t| t.get("template"))
                .and_then(|t| t.as_str())
            {
                Some(source) => Ok(Some(source.to_string())),
                None => Err(ChatError::NoDefault {
                    names: list.iter().filter_map(name).collect(),
                }),
            }
        }
        _ => Ok(None),
    }
}

fn read_json(path: &Path) -> Result<serde_json::Value, ChatError> {
    let read = |message: String| ChatError::Read {
        path: path.to_path_buf(),
        message,
    };
    let text = std::fs::read_to_string(path).map_err(|e| read(e.to_string()))?;
    serde_json::from_str(&text).map_err(|e| read(e.to_string()))
}

/// transformers' `tojson`: `json.dumps(x, ensure_ascii=False, indent=None, separators=None,
/// sort_keys=False)`, with the same keyword arguments.
fn tojson(value: Value, kwargs: Kwargs) -> Result<String, Error> {
    let ensure_ascii: Option<bool> = kwargs.get("ensure_ascii")?;
    let indent: Option<Value> = kwargs.get("indent")?;
    let separators: Option<Vec<String>> = kwargs.get("separators")?;
    let sort_keys: Option<bool> = kwargs.get("sort_keys")?;
    kwargs.assert_all_used()?;
    let indent = match indent {
        None => None,
        Some(v) if v.is_none() => None,
        Some(v) => match (v.as_str(), i64::try_from(v.clone())) {
            (Some(s), _) => Some(s.to_string()),
            (None, Ok(n)) => Some(" ".repeat(n.max(0) as usize)),
            _ => {
                return Err(Error::new(
                    ErrorKind::InvalidOperation,
                    "tojson: indent must be an int or a string",
                ))
            }
        },
    };
    let (item_sep, key_sep) = match separators.as_deref() {
        Some([item, key]) => (item.clone(), key.clone()),
        Some(_) => {
            return Err(Error::new(
                ErrorKind::InvalidOperation,
                "tojson: separators must be a pair",
            ))
        }
        None if indent.is_some() => (",".to_string(), ": ".to_string()),
        None => (", ".to_string(), ": ".to_string()),
    };
    let json = serde_json::to_value(&value)
        .map_err(|e| Error::new(ErrorKind::InvalidOperation, format!("tojson: {e}")))?;
    let style = PyJson {
        ensure_ascii: ensure_ascii.unwrap_or(false),
        indent,
        item_sep,
        key_sep,
        sort_keys: sort_keys.unwrap_or(false),
    };
    let mut out = String::new();
    style.write(&json, 0, &mut out);
    Ok(out)
}

/// Python's `json.dumps` layout.
struct PyJson {
    ensure_ascii: bool,
    indent: Option<String>,
    item_sep: String,
    key_sep: String,
    sort_keys: bool,
}

impl PyJson {
    fn newline(&self, depth: usize, out: &mut String) {
        if let Some(unit) = &self.indent {
            out.push('\n');
            for _ in 0..depth {
                out.push_str(unit);
            }
        }
    }

    fn string(&self, s: &str, out: &mut String) {
        let quoted = serde_json::to_string(s).expect("a string serializes");
        if !self.ensure_ascii {
            out.push_str(&quoted);
            return;
        }
        for c in quoted.chars() {
            if c.is_ascii() {
                out.push(c);
            } else {
                let mut units = [0u16; 2];
                for u in c.encode_utf16(&mut units) {
                    out.push_str(&format!("\\u{u:04x}"));
                }
            }
        }
    }

    fn write(&self, v: &serde_json::Value, depth: usize, out: &mut String) {
        use serde_json::Value as J;
        match v {
            J::Null => out.push_str("null"),
            J::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
            J::Number(n) => out.push_str(&n.to_string()),
            J::String(s) => self.string(s, out),
            J::Array(items) if items.is_empty() => out.push_str("[]"),
            J::Array(items) => {
                out.push('[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push_str(&self.item_sep);
                    }
                    self.newline(depth + 1, out);
                    self.write(item, depth + 1, out);
                }
                self.newline(depth, out);
                out.push(']');
            }
            J::Object(map) if map.is_empty() => out.push_str("{}"),
            J::Object(map) => {
                let mut entries: Vec<_> = map.iter().collect();
                if self.sort_keys {
                    entries.sort_by(|a, b| a.0.cmp(b.0));
                }
                out.push('{');
                for (i, (k, item)) in entries.into_iter().enumerate() {
                    if i > 0 {
                        out.push_str(&self.item_sep);
                    }
                    self.newline(depth + 1, out);
                    self.string(k, out);
                    out.push_str(&self.key_sep);
                    self.write(item, depth + 1, out);
                }
                self.newline(depth, out);
                out.push('}');
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn render(source: &str, messages: &[ChatMessage], gen: bool) -> Result<String, ChatError> {
        let special = SpecialTokens {
            bos_token: Some("<s>".into()),
            ..Default::default()
        };
        ChatTemplate::new(source, special)?.render(messages, gen)
    }

    #[test]
    fn trims_blocks_like_transformers() {
        let t = "{% for m in messages %}\n  {% if m.role == 'user' %}\n[{{ m.content }}]\n  {% endif %}\n{% endfor %}";
        let out = render(
            t,
            &[
                ChatMessage::new("user", "hi"),
                ChatMessage::new("user", "yo"),
            ],
            false,
        )
        .unwrap();
        assert_eq!(out, "[hi]\n[yo]\n");
    }

    #[test]
    fn python_string_methods_work() {
        let t = "{{ messages[0].content.strip() }}|{{ messages[0].content.startswith(' a') }}|{{ bos_token }}";
        let out = render(t, &[ChatMessage::new("user", " ab ")], false).unwrap();
        assert_eq!(out, "ab|True|<s>"); // booleans print as Python prints them
    }

    #[test]
    fn tojson_is_json_dumps() {
        let t = "{{ {'a': 'é<', 'b': [1, 2.5, none]} | tojson }}|{{ 'é' | tojson(ensure_ascii=true) }}|{{ [1] | tojson(indent=2) }}";
        let out = render(t, &[], false).unwrap();
        assert_eq!(
            out,
            "{\"a\": \"é<\", \"b\": [1, 2.5, null]}|\"\\u00e9\"|[\n  1\n]"
        );
    }

    #[test]
    fn raise_exception_is_a_render_error_with_its_message() {
        let t = "{% if messages[0].role != 'user' %}{{ raise_exception('first message must be user') }}{% endif %}";
        let err = render(t, &[ChatMessage::new("assistant", "x")], false).unwrap_err();
        assert!(matches!(err, ChatError::Render(_)));
        assert!(
            err.to_string().contains("first message must be user"),
            "{err}"
        );
    }

    #[test]
    fn a_bad_template_fails_to_compile() {
        let err = render("{% for m in messages %}", &[], false).unwrap_err();
        assert!(matches!(err, ChatError::Compile(_)), "{err}");
    }

    #[test]
    fn named_templates_pick_default() {
        let config = serde_json::json!({"chat_template": [
            {"name": "tool_use", "template": "T"}, {"name": "default", "template": "D"}]});
        assert_eq!(template_in_config(&config).unwrap().as_deref(), Some("D"));
        let config = serde_json::json!({"chat_template": [{"name": "rag", "template": "R"}]});
        assert!(matches!(
            template_in_config(&config),
            Err(ChatError::NoDefault { .. })
        ));
        assert_eq!(template_in_config(&serde_json::json!({})).unwrap(), None);
    }

    #[test]
    fn special_tokens_read_strings_and_added_token_objects() {
        let config = serde_json::json!({"bos_token": "<s>", "eos_token": {"content": "</s>", "special": true}});
        let s = SpecialTokens::from_tokenizer_config(&config);
        assert_eq!(s.bos_token.as_deref(), Some("<s>"));
        assert_eq!(s.eos_token.as_deref(), Some("</s>"));
        assert_eq!(s.pad_token, None);
    }
}
