//! pylatexenc 2.11 `LatexNodes2Text().latex_to_text` for the answer subset
//! (REFERENCE.md §5, `_parse_latex` inside PRM800K's `_normalize`).
//!
//! A port of latexwalker's tokenizer and tolerant node parser (macros with their
//! argument specs, `{..}` groups, `[..]` optional arguments, environments, `\(..\)`
//! math, specials such as `~` and `--`) and of latex2text's rendering, driven by
//! pylatexenc's own macro table ([`super::latex_table`], generated).
//!
//! Knowingly different: accents are not NFC-composed (`\'e` gives `e` + U+0301
//! where Python gives `é`); callable macro specs other than accents, math styles
//! and `\texorpdfstring` render as nothing; Python's recursion limit is modelled
//! by a frame budget (a group costs 4 frames, a macro argument 3 more), so inputs nested
//! more than about 140-240 levels fail as in Python (the caller then keeps the
//! text unchanged, as `_normalize`'s `except: pass` does).

use super::latex_table::{MACROS, MATRIX_ENVS};
use super::pystr::is_space;

/// How latex2text renders a macro (see scripts/gen_latex_table.py).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Not in latex2text's table: rendered as nothing (arguments dropped).
    Unknown,
    /// Rendered as nothing.
    Discard,
    /// The argument texts, concatenated.
    Args,
    /// A fixed string.
    Plain,
    /// A `%s` / `%(n)s` format over the argument texts.
    Format,
    /// Each character of the argument followed by a combining mark.
    Accent,
    /// Letters mapped to a Unicode math alphabet (payload: style number).
    Style,
}

/// Why the Python raises (the caller keeps its input, like `except: pass`).
#[derive(Debug)]
pub struct Fail;

/// Python frames allowed before `RecursionError` (limit 1000, less the callers').
const FRAME_BUDGET: usize = 985;
const GROUP_FRAMES: usize = 4;
const ARG_FRAMES: usize = 3;

#[derive(Debug)]
enum Node {
    Chars(String),
    Group(Vec<Node>),
    Macro { name: String, post_space: String, args: Option<Vec<Option<Node>>> },
    Specials(&'static str),
    Math { display: bool, nodes: Vec<Node> },
    Env { name: String, nodes: Vec<Node> },
    Comment { post_space: String },
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    /// One ordinary character (the common case, kept unallocated).
    Ch(char),
    /// Characters: a paragraph break `\n\n`, or a bad `\begin` kept as text.
    Char(String),
    Macro { name: String, post_space: String },
    Math(&'static str),
    BeginEnv(String),
    EndEnv(String),
    Comment { post_space: String },
    Open(char),
    Close(char),
    Specials(&'static str),
}

struct Token {
    tok: Tok,
    pos: usize,
    len: usize,
    pre_space: String,
}

enum Stop {
    /// LatexWalkerEndOfStream with its final space.
    Eos(String),
    /// Python recursion limit.
    Deep,
}

const SPECIALS: [(&str, &str); 8] = [
    ("---", "\u{2014}"),
    ("--", "\u{2013}"),
    ("``", "\u{201c}"),
    ("''", "\u{201d}"),
    ("!`", "\u{a1}"),
    ("?`", "\u{bf}"),
    ("~", "\u{a0}"),
    ("&", "   "),
];

fn lookup(name: &str) -> Option<&'static (&'static str, &'static str, Kind, &'static str)> {
    MACROS.binary_search_by(|e| e.0.cmp(name)).ok().map(|i| &MACROS[i])
}

fn env_argspec(name: &str) -> &'static str {
    match name {
        "array" => "[{",
        "tabular" | "alignat" | "alignat*" => "{",
        "tabular*" => "{{",
        "tabularx" => "{[{",
        "figure" | "figure*" | "table" | "table*" | "theorem" | "proposition" | "lemma"
        | "corollary" | "definition" | "conjecture" | "remark" | "proof" | "thm" | "prop"
        | "lem" | "cor" | "conj" | "rem" | "defn" | "enumerate" | "itemize" | "description" => "[",
        _ => "",
    }
}

struct Walker {
    s: Vec<char>,
    frames: usize,
}

impl Walker {
    fn starts_with(&self, pos: usize, pat: &str) -> bool {
        (pos..).zip(pat.chars()).all(|(i, c)| self.s.get(i) == Some(&c))
    }

    /// `get_token`; `brackets`: `[`/`]` count as braces; `in_dollar`: inside `$..$`.
    fn get_token(&self, mut pos: usize, brackets: bool, environments: bool, in_dollar: bool) -> Result<Token, Stop> {
        let s = &self.s;
        let mut space = String::new();
        while pos < s.len() && is_space(s[pos]) {
            space.push(s[pos]);
            pos += 1;
            if space.ends_with("\n\n") {
                space.truncate(space.len() - 2);
                return Ok(Token { tok: Tok::Char("\n\n".into()), pos: pos - 2, len: 2, pre_space: space });
            }
        }
        if pos >= s.len() {
            return Err(Stop::Eos(space));
        }
        let c = s[pos];
        if c == '\\' {
            if pos + 1 >= s.len() {
                return Err(Stop::Eos(String::new()));
            }
            let mut name = String::new();
            name.push(s[pos + 1]);
            let mut i = 2;
            let alpha = s[pos + 1].is_alphabetic();
            if alpha {
                while pos + i < s.len() && s[pos + i].is_alphabetic() {
                    name.push(s[pos + i]);
                    i += 1;
                }
            }
            let math = match name.as_str() {
                "[" => Some("\\["),
                "]" => Some("\\]"),
                "(" => Some("\\("),
                ")" => Some("\\)"),
                _ => None,
            };
            if let Some(m) = math {
                return Ok(Token { tok: Tok::Math(m), pos, len: i, pre_space: space });
            }
            if environments && (name == "begin" || name == "end") {
                // re.match(r'^\s*\{([\w* ._-]+)\}', s[pos+i:])
                let mut j = pos + i;
                while j < s.len() && is_space(s[j]) {
                    j += 1;
                }
                let mut env = String::new();
                let mut ok = false;
                if j < s.len() && s[j] == '{' {
                    let mut k = j + 1;
                    while k < s.len() && (s[k].is_alphanumeric() || "_* .-".contains(s[k])) {
                        env.push(s[k]);
                        k += 1;
                    }
                    if !env.is_empty() && k < s.len() && s[k] == '}' {
                        ok = true;
                        j = k + 1;
                    }
                }
                if !ok {
                    return Ok(Token { tok: Tok::Char(format!("\\{name}")), pos, len: i, pre_space: space });
                }
                let tok = if name == "begin" { Tok::BeginEnv(env) } else { Tok::EndEnv(env) };
                return Ok(Token { tok, pos, len: j - pos, pre_space: space });
            }
            let mut post = String::new();
            if alpha {
                while pos + i < s.len() && is_space(s[pos + i]) {
                    post.push(s[pos + i]);
                    i += 1;
                    if post.ends_with("\n\n") {
                        post.truncate(post.len() - 2);
                        i -= 2;
                        break;
                    }
                }
            }
            return Ok(Token { tok: Tok::Macro { name, post_space: post }, pos, len: i, pre_space: space });
        }
        if c == '%' {
            // comment up to the newline; the newline and following blanks are post space
            let mut j = pos;
            while j < s.len() && s[j] != '\n' && s[j] != '\r' {
                j += 1;
            }
            if j >= s.len() {
                return Ok(Token { tok: Tok::Comment { post_space: String::new() }, pos, len: j - pos, pre_space: space });
            }
            let mut k = j + 1;
            if s[j] == '\n' && k < s.len() && s[k] == '\r' {
                k += 1;
            }
            let mut extra = String::new();
            let mut m = k;
            while m < s.len() && is_space(s[m]) {
                extra.push(s[m]);
                m += 1;
            }
            if extra.starts_with('\n') || extra.starts_with('\r') {
                return Ok(Token { tok: Tok::Comment { post_space: String::new() }, pos, len: j - pos, pre_space: space });
            }
            let post: String = s[j..m].iter().collect();
            return Ok(Token { tok: Tok::Comment { post_space: post }, pos, len: m - pos, pre_space: space });
        }
        if c == '{' || (brackets && c == '[') {
            return Ok(Token { tok: Tok::Open(c), pos, len: 1, pre_space: space });
        }
        if c == '}' || (brackets && c == ']') {
            return Ok(Token { tok: Tok::Close(c), pos, len: 1, pre_space: space });
        }
        if self.starts_with(pos, "$$") && !in_dollar {
            return Ok(Token { tok: Tok::Math("$$"), pos, len: 2, pre_space: space });
        }
        if c == '$' {
            return Ok(Token { tok: Tok::Math("$"), pos, len: 1, pre_space: space });
        }
        for (pat, _) in SPECIALS.iter() {
            if self.starts_with(pos, pat) {
                return Ok(Token { tok: Tok::Specials(pat), pos, len: pat.chars().count(), pre_space: space });
            }
        }
        Ok(Token { tok: Tok::Ch(c), pos, len: 1, pre_space: space })
    }

    /// `get_latex_expression` (a macro argument): one token, or a braced group.
    fn get_expression(&mut self, pos: usize, in_dollar: bool) -> Result<(Node, usize), Stop> {
        let t = self.get_token(pos, false, false, in_dollar)?;
        let end = t.pos + t.len;
        match t.tok {
            Tok::Macro { name, post_space } => {
                if name == "end" {
                    return Ok((Node::Chars(String::new()), t.pos));
                }
                Ok((Node::Macro { name, post_space, args: None }, end))
            }
            Tok::Specials(sp) => Ok((Node::Specials(sp), end)),
            Tok::Comment { .. } => self.get_expression(end, in_dollar),
            Tok::Open(_) => self.braced_group(t.pos, '{', in_dollar),
            Tok::Close(_) => Ok((Node::Chars(String::new()), t.pos)),
            Tok::Char(c) => Ok((Node::Chars(c), end)),
            Tok::Ch(c) => Ok((Node::Chars(c.to_string()), end)),
            Tok::Math(m) => {
                if m.starts_with('\\') {
                    Ok((Node::Macro { name: m.to_string(), post_space: String::new(), args: None }, end))
                } else {
                    Ok((Node::Chars(m.to_string()), end))
                }
            }
            // environments=False: \begin / \end come back as macros above
            Tok::BeginEnv(_) | Tok::EndEnv(_) => Ok((Node::Chars(String::new()), end)),
        }
    }

    /// `get_latex_braced_group` starting at the opening brace at/after `pos`.
    fn braced_group(&mut self, pos: usize, open: char, in_dollar: bool) -> Result<(Node, usize), Stop> {
        let t = self.get_token(pos, open == '[', true, in_dollar)?;
        let close = if open == '[' { ']' } else { '}' };
        self.frames += GROUP_FRAMES;
        if self.frames > FRAME_BUDGET {
            return Err(Stop::Deep);
        }
        let r = self.get_nodes(t.pos + t.len, Some(close), None, None, in_dollar);
        self.frames -= GROUP_FRAMES;
        let (nodes, end) = r?;
        Ok((Node::Group(nodes), end))
    }

    /// `MacroStandardArgsParser.parse_args`; `Err(Eos)` = the macro gets no args.
    fn parse_args(&mut self, spec: &str, mut p: usize, no_space_opt: bool, in_dollar: bool) -> Result<(Vec<Option<Node>>, usize), Stop> {
        let mut args = Vec::new();
        self.frames += ARG_FRAMES;
        if self.frames > FRAME_BUDGET {
            return Err(Stop::Deep);
        }
        let mut res = Ok(());
        for a in spec.chars() {
            match a {
                '{' => match self.get_expression(p, in_dollar) {
                    Ok((n, np)) => {
                        args.push(Some(n));
                        p = np;
                    }
                    Err(e) => {
                        res = Err(e);
                        break;
                    }
                },
                '[' => {
                    if no_space_opt && p < self.s.len() && is_space(self.s[p]) {
                        args.push(None);
                        continue;
                    }
                    let t = match self.get_token(p, true, false, in_dollar) {
                        Ok(t) => t,
                        Err(Stop::Eos(_)) => {
                            args.push(None);
                            continue;
                        }
                        Err(e) => {
                            res = Err(e);
                            break;
                        }
                    };
                    if t.tok == Tok::Open('[') {
                        match self.braced_group(p, '[', in_dollar) {
                            Ok((n, np)) => {
                                args.push(Some(n));
                                p = np;
                            }
                            Err(e) => {
                                res = Err(e);
                                break;
                            }
                        }
                    } else {
                        args.push(None);
                    }
                }
                '*' => match self.get_token(p, false, true, in_dollar) {
                    Ok(t) if matches!(&t.tok, Tok::Ch('*')) || matches!(&t.tok, Tok::Char(c) if c.starts_with('*')) => {
                        args.push(Some(Node::Chars("*".into())));
                        p = t.pos + 1;
                    }
                    Ok(_) => args.push(None),
                    Err(e) => {
                        res = Err(e);
                        break;
                    }
                },
                _ => {}
            }
        }
        self.frames -= ARG_FRAMES;
        res.map(|_| (args, p))
    }

    /// `get_latex_nodes` (tolerant): nodes up to the stop token or the end.
    fn get_nodes(
        &mut self,
        mut pos: usize,
        stop_brace: Option<char>,
        stop_env: Option<&str>,
        stop_math: Option<&'static str>,
        in_dollar: bool,
    ) -> Result<(Vec<Node>, usize), Stop> {
        let mut nodes = Vec::new();
        let mut last = String::new();
        let brackets = stop_brace == Some(']');
        loop {
            let t = match self.get_token(pos, brackets, true, in_dollar) {
                Ok(t) => t,
                Err(Stop::Eos(space)) => {
                    last.push_str(&space);
                    pos += space.chars().count();
                    if !last.is_empty() {
                        nodes.push(Node::Chars(last));
                    }
                    return Ok((nodes, pos));
                }
                Err(e) => return Err(e),
            };
            pos = t.pos + t.len;
            match &t.tok {
                Tok::Ch(c) => {
                    last.push_str(&t.pre_space);
                    last.push(*c);
                    continue;
                }
                Tok::Char(c) => {
                    last.push_str(&t.pre_space);
                    last.push_str(c);
                    continue;
                }
                _ => {}
            }
            if !last.is_empty() {
                let mut chars = std::mem::take(&mut last);
                chars.push_str(&t.pre_space);
                nodes.push(Node::Chars(chars));
            } else if !t.pre_space.is_empty() {
                nodes.push(Node::Chars(t.pre_space.clone()));
            }
            match t.tok {
                Tok::Char(_) | Tok::Ch(_) => {}
                Tok::Close(c) => {
                    if Some(c) == stop_brace {
                        return Ok((nodes, pos));
                    }
                    // mismatched closing brace: parse error, ignored
                }
                Tok::EndEnv(name) => {
                    if stop_env == Some(name.as_str()) {
                        return Ok((nodes, pos));
                    }
                }
                Tok::Math(m) => {
                    if let Some(sm) = stop_math {
                        if m == sm {
                            return Ok((nodes, pos));
                        }
                        if m == "\\)" || m == "\\]" {
                            continue;
                        }
                    } else if m == "\\)" || m == "\\]" {
                        continue;
                    }
                    let closing: &'static str = match m {
                        "\\(" => "\\)",
                        "\\[" => "\\]",
                        other => other,
                    };
                    let display = !(m == "\\(" || m == "$");
                    self.frames += GROUP_FRAMES;
                    if self.frames > FRAME_BUDGET {
                        return Err(Stop::Deep);
                    }
                    let r = self.get_nodes(pos, None, None, Some(closing), m == "$" || in_dollar);
                    self.frames -= GROUP_FRAMES;
                    let (inner, end) = r?;
                    pos = end;
                    nodes.push(Node::Math { display, nodes: inner });
                }
                Tok::Comment { post_space } => nodes.push(Node::Comment { post_space }),
                Tok::Open(c) => {
                    let (g, end) = self.braced_group(t.pos, c, in_dollar)?;
                    pos = end;
                    nodes.push(g);
                }
                Tok::BeginEnv(name) => {
                    let spec = env_argspec(&name);
                    let mut p = pos;
                    if !spec.is_empty() {
                        match self.parse_args(spec, p, false, in_dollar) {
                            Ok((_, np)) => p = np,
                            Err(Stop::Eos(_)) => {}
                            Err(e) => return Err(e),
                        }
                    }
                    self.frames += GROUP_FRAMES;
                    if self.frames > FRAME_BUDGET {
                        return Err(Stop::Deep);
                    }
                    let r = self.get_nodes(p, None, Some(&name), None, in_dollar);
                    self.frames -= GROUP_FRAMES;
                    let (inner, end) = r?;
                    pos = end;
                    nodes.push(Node::Env { name, nodes: inner });
                }
                Tok::Macro { name, post_space } => {
                    let (spec, no_space_opt) = match name.as_str() {
                        "\\" => ("*[", true),
                        n => (lookup(n).map_or("", |e| e.1), false),
                    };
                    let args = match self.parse_args(spec, pos, no_space_opt, in_dollar) {
                        Ok((args, np)) => {
                            pos = np;
                            Some(args)
                        }
                        Err(Stop::Eos(_)) => None,
                        Err(e) => return Err(e),
                    };
                    nodes.push(Node::Macro { name, post_space, args });
                }
                Tok::Specials(sp) => nodes.push(Node::Specials(sp)),
            }
        }
    }
}

/// latex2text's rendering.
struct Render {
    frames: usize,
}

fn is_bare_macro(n: &Node) -> bool {
    match n {
        Node::Macro { args: None, .. } => true,
        Node::Macro { args: Some(a), .. } => a.iter().all(|x| x.is_none()) && a.is_empty(),
        _ => false,
    }
}

fn style_char(c: char, style: &str) -> char {
    let (up, lo): (u32, u32) = match style {
        "1" => (0x1D400, 0x1D41A),
        "2" => (0x1D434, 0x1D44E),
        "3" => (0x1D5A0, 0x1D5BA),
        "4" => (0x1D538, 0x1D552),
        "5" => (0x1D670, 0x1D68A),
        "6" => (0x1D49C, 0x1D4B6),
        "7" => (0x1D504, 0x1D51E),
        _ => return c,
    };
    let exc = match (style, c) {
        ("2", 'h') => Some('\u{210E}'),
        ("6", 'B') => Some('\u{212C}'),
        ("6", 'E') => Some('\u{2130}'),
        ("6", 'F') => Some('\u{2131}'),
        ("6", 'H') => Some('\u{210B}'),
        ("6", 'I') => Some('\u{2110}'),
        ("6", 'L') => Some('\u{2112}'),
        ("6", 'M') => Some('\u{2133}'),
        ("6", 'R') => Some('\u{211B}'),
        ("6", 'e') => Some('\u{212F}'),
        ("6", 'g') => Some('\u{210A}'),
        ("6", 'o') => Some('\u{2134}'),
        ("7", 'C') => Some('\u{212D}'),
        ("7", 'H') => Some('\u{210C}'),
        ("7", 'I') => Some('\u{2111}'),
        ("7", 'R') => Some('\u{211C}'),
        ("7", 'Z') => Some('\u{2128}'),
        ("4", 'C') => Some('\u{2102}'),
        ("4", 'H') => Some('\u{210D}'),
        ("4", 'N') => Some('\u{2115}'),
        ("4", 'P') => Some('\u{2119}'),
        ("4", 'Q') => Some('\u{211A}'),
        ("4", 'R') => Some('\u{211D}'),
        ("4", 'Z') => Some('\u{2124}'),
        _ => None,
    };
    if let Some(e) = exc {
        return e;
    }
    let base = if c.is_ascii_uppercase() {
        up + (c as u32 - 'A' as u32)
    } else if c.is_ascii_lowercase() {
        lo + (c as u32 - 'a' as u32)
    } else {
        return c;
    };
    char::from_u32(base).unwrap_or(c)
}

/// Python `%`-formatting of a latex2text replacement: `%s` (positional) or
/// `%(n)s` (by argument number). `Ok(None)`: TypeError -> keep the literal.
fn py_format(fmt: &str, args: &[String]) -> Result<Option<String>, Fail> {
    let mut out = String::new();
    let mut it = fmt.chars().peekable();
    let mut positional = 0usize;
    let mut used_positional = false;
    while let Some(c) = it.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        match it.next() {
            Some('%') => out.push('%'),
            Some('s') => {
                used_positional = true;
                match args.get(positional) {
                    Some(a) => out.push_str(a),
                    None => return Ok(None), // not enough arguments
                }
                positional += 1;
            }
            Some('(') => {
                let mut key = String::new();
                for k in it.by_ref() {
                    if k == ')' {
                        break;
                    }
                    key.push(k);
                }
                let _ = it.next(); // the 's'
                let idx: usize = key.parse().map_err(|_| Fail)?;
                match idx.checked_sub(1).and_then(|i| args.get(i)) {
                    Some(a) => out.push_str(a),
                    None => return Err(Fail), // KeyError is not caught upstream
                }
            }
            _ => return Ok(None),
        }
    }
    if used_positional && positional != args.len() {
        return Ok(None); // "not all arguments converted"
    }
    Ok(Some(out))
}

impl Render {
    fn nodelist(&mut self, nodes: &[Node], math: bool) -> Result<String, Fail> {
        let mut s = String::new();
        let mut prev: Option<&Node> = None;
        for n in nodes {
            if math {
                if let (Some(Node::Macro { post_space, .. }), Node::Chars(_)) = (prev, n) {
                    if prev.is_some_and(is_bare_macro) {
                        s.push_str(post_space);
                    }
                }
            }
            s.push_str(&self.node(n, math)?);
            prev = Some(n);
        }
        Ok(s)
    }

    fn group_contents(&mut self, n: Option<&Node>, math: bool) -> Result<String, Fail> {
        match n {
            None => Ok(String::new()),
            Some(Node::Group(inner)) => self.nodelist(inner, math),
            Some(other) => self.node(other, math),
        }
    }

    fn node(&mut self, n: &Node, math: bool) -> Result<String, Fail> {
        self.frames += 1;
        if self.frames > FRAME_BUDGET {
            return Err(Fail);
        }
        let r = self.node_inner(n, math);
        self.frames -= 1;
        r
    }

    fn node_inner(&mut self, n: &Node, math: bool) -> Result<String, Fail> {
        match n {
            Node::Chars(c) => {
                if math && c.chars().all(is_space) {
                    Ok(String::new())
                } else {
                    Ok(c.clone())
                }
            }
            Node::Group(inner) => self.nodelist(inner, math),
            Node::Comment { post_space } => Ok(post_space.clone()),
            Node::Specials(sp) => Ok(SPECIALS.iter().find(|(p, _)| p == sp).map_or(sp.to_string(), |(_, r)| r.to_string())),
            Node::Math { display, nodes } => {
                let content = self.nodelist(nodes, true)?;
                let content = super::pystr::strip(&content);
                if *display {
                    Ok(format!("\n    {}\n", content.replace('\n', "\n    ")))
                } else {
                    Ok(content.to_string())
                }
            }
            Node::Env { name, nodes } => {
                if MATRIX_ENVS.contains(&name.as_str()) {
                    self.matrix(nodes, math)
                } else {
                    self.nodelist(nodes, math)
                }
            }
            Node::Macro { name, args, .. } => self.macro_text(name, args.as_deref(), math),
        }
    }

    fn macro_text(&mut self, name: &str, args: Option<&[Option<Node>]>, math: bool) -> Result<String, Fail> {
        if name == "\\" {
            return Ok("\n".into());
        }
        let Some(&(_, _, kind, payload)) = lookup(name) else {
            return Ok(String::new());
        };
        let arg_texts = |r: &mut Render| -> Result<Vec<String>, Fail> {
            let mut v = Vec::new();
            for a in args.unwrap_or(&[]) {
                v.push(r.group_contents(a.as_ref(), math)?);
            }
            Ok(v)
        };
        match kind {
            Kind::Unknown | Kind::Discard => Ok(String::new()),
            Kind::Plain => Ok(payload.to_string()),
            Kind::Args => Ok(arg_texts(self)?.concat()),
            Kind::Format => {
                let texts = arg_texts(self)?;
                Ok(py_format(payload, &texts)?.unwrap_or_else(|| payload.to_string()))
            }
            Kind::Style => {
                let first = match args.and_then(|a| a.first()) {
                    Some(a) => self.group_contents(a.as_ref(), math)?,
                    None => String::new(),
                };
                Ok(first.chars().map(|c| style_char(c, payload)).collect())
            }
            Kind::Accent => {
                let c = match args.and_then(|a| a.first()) {
                    Some(a) => {
                        let t = self.group_contents(a.as_ref(), math)?;
                        super::pystr::strip(&t).to_string()
                    }
                    None => " ".to_string(),
                };
                let mut out = String::new();
                for ch in c.chars() {
                    out.push(match ch {
                        '\u{131}' => 'i',
                        '\u{237}' => 'j',
                        o => o,
                    });
                    out.push_str(payload);
                }
                Ok(out)
            }
        }
    }

    /// `fmt_matrix_environment_node`: `[ a b; c d ]`, cells right-justified.
    fn matrix(&mut self, nodes: &[Node], math: bool) -> Result<String, Fail> {
        let mut rows: Vec<Vec<String>> = Vec::new();
        let mut row: Vec<String> = Vec::new();
        let mut buf: Vec<&Node> = Vec::new();
        let flush = |r: &mut Render, buf: &mut Vec<&Node>, row: &mut Vec<String>| -> Result<(), Fail> {
            if !buf.is_empty() {
                let mut s = String::new();
                for n in buf.iter() {
                    s.push_str(&r.node(n, math)?);
                }
                row.push(super::pystr::strip(&s).to_string());
            }
            buf.clear();
            Ok(())
        };
        for n in nodes {
            match n {
                Node::Specials("&") => flush(self, &mut buf, &mut row)?,
                Node::Macro { name, .. } if name == "\\" => {
                    flush(self, &mut buf, &mut row)?;
                    rows.push(std::mem::take(&mut row));
                }
                other => buf.push(other),
            }
        }
        flush(self, &mut buf, &mut row)?;
        rows.push(row);
        let width = rows.iter().flatten().map(|x| x.chars().count()).max().ok_or(Fail)?;
        let body: Vec<String> = rows
            .iter()
            .map(|r| {
                r.iter()
                    .map(|x| format!("{}{}", " ".repeat(width - x.chars().count()), x))
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .collect();
        Ok(format!("[ {} ]", body.join("; ")))
    }
}

/// `LatexNodes2Text().latex_to_text(s)`; `Err` where Python raises.
pub fn latex_to_text(s: &str) -> Result<String, Fail> {
    let mut w = Walker { s: s.chars().collect(), frames: 0 };
    let (nodes, _) = match w.get_nodes(0, None, None, None, false) {
        Ok(x) => x,
        Err(_) => return Err(Fail),
    };
    Render { frames: 0 }.nodelist(&nodes, false)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> String {
        latex_to_text(s).unwrap_or_else(|_| "<FAIL>".into())
    }

    #[test]
    fn like_pylatexenc() {
        assert_eq!(t("\\frac{a}{b}"), "a/b");
        assert_eq!(t("\\frac{a+b}{c}"), "a+b/c");
        assert_eq!(t("\\frac 59"), "5/9");
        assert_eq!(t("\\sqrt[3]{2}"), "√(2)");
        assert_eq!(t("\\sqrt3"), "√(3)");
        assert_eq!(t("\\left( 3, \\frac{\\pi}{2} \\right)"), "( 3, π/2 )");
        assert_eq!(t("\\cot x"), "x");
        assert_eq!(t("\\sin x"), "sinx");
        assert_eq!(t("\\mbox{ inches}^2"), "^2");
        assert_eq!(t("\\text{ a } b"), " a  b");
        assert_eq!(t("10,\\!080"), "10,080");
        assert_eq!(t("\\frac{1}"), "%s/%s1");
        assert_eq!(t("{\\frac{1}}"), "1/");
        assert_eq!(t("\\sqrt\\frac{1}{2}"), "√(%s/%s)12");
        assert_eq!(t("\\begin{pmatrix} 1 & 22 \\\\ 333 & 4 \\end{pmatrix}"), "[   1  22; 333   4 ]");
        assert_eq!(t("\\[x\\]"), "\n    x\n");
        assert_eq!(t("a}b"), "ab");
        assert_eq!(t("x--1"), "x\u{2013}1");
        assert_eq!(t("\\mathbf{v1}"), "\u{1D42F}1");
    }

    #[test]
    fn python_raises() {
        assert!(latex_to_text("2\\sqrt").is_err());
        assert!(latex_to_text(&format!("{}x{}", "{".repeat(300), "}".repeat(300))).is_err());
        assert!(latex_to_text(&format!("{}x{}", "{".repeat(200), "}".repeat(200))).is_ok());
    }
}
