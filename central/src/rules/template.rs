//! The template language of rule labels and annotations: the subset of Go's `text/template`
//! that Prometheus rule files use, with Prometheus's functions.
//!
//! Prometheus runs every label and annotation template with a preamble that defines
//! `$labels`, `$externalLabels`, `$externalURL` and `$value` (rules/alerting.go), so those
//! variables, and `.Labels`, `.ExternalLabels`, `.ExternalURL` and `.Value`, are always
//! defined. Parse errors are worded as Go's (`template: NAME:LINE: ...`), which is what
//! `promtool check rules` prints.

use std::collections::BTreeMap;
use std::fmt;

/// A parsed template.
#[derive(Debug, Clone, PartialEq)]
pub struct Template {
    pub name: String,
    pub nodes: Vec<Node>,
    /// Templates named by `{{ define }}` and `{{ block }}`.
    pub defines: BTreeMap<String, Vec<Node>>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Node {
    Text(String),
    /// `{{ pipeline }}`: prints the pipeline's value unless it declares a variable.
    Action(Pipeline),
    /// `{{ if }}`, `{{ with }}` and `{{ range }}` with their `{{ else }}` branch.
    Branch {
        kind: BranchKind,
        pipe: Pipeline,
        body: Vec<Node>,
        otherwise: Vec<Node>,
    },
    /// `{{ template "name" pipeline }}` (and the call a `{{ block }}` makes).
    Call(String, Option<Pipeline>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BranchKind {
    If,
    With,
    Range,
}

/// `$a, $b := cmd | cmd ...`
#[derive(Debug, Clone, PartialEq)]
pub struct Pipeline {
    /// Variables the pipeline declares (`:=`) or assigns (`=`).
    pub vars: Vec<String>,
    pub declares: bool,
    pub commands: Vec<Command>,
}

/// A function call or a single operand; a piped value is passed as the last argument.
#[derive(Debug, Clone, PartialEq)]
pub struct Command {
    pub args: Vec<Operand>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Operand {
    /// `.A.B` (empty: `.`).
    Field(Vec<String>),
    /// `$x.A.B`.
    Variable(String, Vec<String>),
    Function(String),
    Str(String),
    Number(Number),
    Bool(bool),
    Nil,
    /// `(pipeline).A.B`.
    Group(Box<Pipeline>, Vec<String>),
}

/// A number constant: Go gives `99` and `'a'` the type int and `1.5` or `1e3` float64, and
/// the two do not compare with each other.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Number {
    Int(i64),
    Float(f64),
}

/// A template that does not parse, worded as Go's `text/template` words it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError {
    pub name: String,
    pub line: usize,
    pub message: String,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "template: {}:{}: {}", self.name, self.line, self.message)
    }
}

impl std::error::Error for ParseError {}

/// Go's builtin functions (text/template funcs.go) and Prometheus's (template/template.go).
pub const FUNCTIONS: &[&str] = &[
    "and",
    "call",
    "html",
    "index",
    "slice",
    "js",
    "len",
    "not",
    "or",
    "print",
    "printf",
    "println",
    "urlquery",
    "eq",
    "ge",
    "gt",
    "le",
    "lt",
    "ne",
    "query",
    "first",
    "label",
    "value",
    "strvalue",
    "args",
    "reReplaceAll",
    "safeHtml",
    "match",
    "title",
    "toUpper",
    "toLower",
    "graphLink",
    "tableLink",
    "sortByLabel",
    "humanize",
    "humanize1024",
    "humanizeDuration",
    "humanizePercentage",
    "humanizeTimestamp",
    "toTime",
    "pathPrefix",
    "externalURL",
    "parseDuration",
    "stripPort",
    "stripDomain",
];

/// Variables the preamble of every rule template defines.
pub const PREAMBLE_VARIABLES: &[&str] =
    &["$", "$labels", "$externalLabels", "$externalURL", "$value"];

#[derive(Debug, Clone, PartialEq)]
enum Token {
    Field(String),
    Variable(String),
    Ident(String),
    Str(String),
    Number(Number),
    Char(char),
    LeftParen,
    RightParen,
    Pipe,
    Declare,
    Assign,
    Comma,
    Dot,
}

/// Pieces of the source: text, and the tokens of one action with the line it starts on.
enum Piece {
    Text(String),
    Action(Vec<Token>, usize),
}

impl Template {
    /// Parses `source`; `name` is what errors call the template (Prometheus uses
    /// `__alert_<alertname>`).
    pub fn parse(name: &str, source: &str) -> Result<Template, ParseError> {
        let err = |line: usize, message: String| ParseError {
            name: name.to_string(),
            line,
            message,
        };
        let pieces = lex(source).map_err(|(line, m)| err(line, m))?;
        let mut parser = Parser {
            pieces: pieces.into_iter(),
            scopes: vec![PREAMBLE_VARIABLES.iter().map(|v| v.to_string()).collect()],
            depth: 0,
            defines: BTreeMap::new(),
        };
        let (nodes, end) = parser.list().map_err(|(line, m)| err(line, m))?;
        match end {
            Stop::Eof => Ok(Template {
                name: name.to_string(),
                nodes,
                defines: parser.defines,
            }),
            Stop::End(line) => Err(err(line, "unexpected {{end}}".into())),
            Stop::Else(_, line) => Err(err(line, "unexpected {{else}}".into())),
        }
    }
}

fn lex(source: &str) -> Result<Vec<Piece>, (usize, String)> {
    let mut pieces = Vec::new();
    let mut rest = source;
    let mut line = 1;
    let mut trim_next = false;
    while !rest.is_empty() {
        let Some(open) = rest.find("{{") else {
            let text = if trim_next { rest.trim_start() } else { rest };
            pieces.push(Piece::Text(text.to_string()));
            break;
        };
        let mut text = &rest[..open];
        if trim_next {
            text = text.trim_start();
        }
        let after = &rest[open + 2..];
        // `{{- ` trims the text before; the marker needs the space after it.
        let trim_left = after.starts_with("- ")
            || after.starts_with("-\t")
            || after.starts_with("-\n")
            || after.starts_with("-\r");
        if trim_left {
            text = text.trim_end();
        }
        if !text.is_empty() {
            pieces.push(Piece::Text(text.to_string()));
        }
        line += rest[..open].matches('\n').count();
        let body_start = if trim_left { 2 } else { 0 };
        let inner = &after[body_start..];
        let start_line = line;
        let (tokens, consumed, trim_right) = lex_action(inner, &mut line)?;
        trim_next = trim_right;
        if let Some(tokens) = tokens {
            pieces.push(Piece::Action(tokens, start_line));
        }
        rest = &inner[consumed..];
    }
    Ok(pieces)
}

/// An action's tokens (`None` for a comment), the bytes it took and whether it trims after.
type LexedAction = (Option<Vec<Token>>, usize, bool);

/// Lexes one action up to and including its `}}`.
fn lex_action(s: &str, line: &mut usize) -> Result<LexedAction, Failure> {
    let trimmed = s.trim_start();
    if trimmed.starts_with("/*") {
        let start = s.len() - trimmed.len();
        let Some(end) = trimmed.find("*/") else {
            return Err((*line, "unclosed comment".into()));
        };
        *line += trimmed[..end].matches('\n').count();
        let after = &trimmed[end + 2..];
        let (consumed, trim) = if let Some(a) = after.strip_prefix(" -}}") {
            (after.len() - a.len(), true)
        } else if after.starts_with("}}") {
            (2, false)
        } else {
            return Err((*line, "comment ends before closing delimiter".into()));
        };
        return Ok((None, start + end + 2 + consumed, trim));
    }
    let bytes: Vec<char> = s.chars().collect();
    let mut tokens = Vec::new();
    let mut i = 0;
    let mut byte = 0;
    let advance = |i: &mut usize, byte: &mut usize, n: usize, bytes: &[char]| {
        for c in &bytes[*i..*i + n] {
            *byte += c.len_utf8();
        }
        *i += n;
    };
    loop {
        let Some(&c) = bytes.get(i) else {
            return Err((*line, "unclosed action".into()));
        };
        let at = |k: usize| bytes.get(i + k).copied();
        if c == '}' && at(1) == Some('}') {
            advance(&mut i, &mut byte, 2, &bytes);
            return Ok((Some(tokens), byte, false));
        }
        if c.is_whitespace() {
            // ` -}}` ends the action and trims the text after it.
            if at(1) == Some('-') && at(2) == Some('}') && at(3) == Some('}') {
                advance(&mut i, &mut byte, 4, &bytes);
                return Ok((Some(tokens), byte, true));
            }
            if c == '\n' {
                *line += 1;
            }
            advance(&mut i, &mut byte, 1, &bytes);
            continue;
        }
        let word_end = |from: usize| {
            let mut j = from;
            while bytes
                .get(j)
                .is_some_and(|c| c.is_alphanumeric() || *c == '_')
            {
                j += 1;
            }
            j
        };
        let (token, len) = match c {
            '(' => (Token::LeftParen, 1),
            ')' => (Token::RightParen, 1),
            '|' => (Token::Pipe, 1),
            ',' => (Token::Comma, 1),
            ':' if at(1) == Some('=') => (Token::Declare, 2),
            '=' => (Token::Assign, 1),
            '.' if at(1).is_some_and(|c| c.is_alphabetic() || c == '_') => {
                let end = word_end(i + 1);
                (Token::Field(bytes[i + 1..end].iter().collect()), end - i)
            }
            '.' if !at(1).is_some_and(|c| c.is_ascii_digit()) => (Token::Dot, 1),
            '$' => {
                let end = word_end(i + 1);
                (Token::Variable(bytes[i..end].iter().collect()), end - i)
            }
            '"' => {
                let (text, len) =
                    quoted(&bytes[i..]).ok_or((*line, "unterminated quoted string".to_string()))?;
                (Token::Str(text), len)
            }
            '`' | '\'' => {
                let inner: String = bytes[i + 1..].iter().take_while(|x| **x != c).collect();
                let len = inner.chars().count() + 2;
                if i + len > bytes.len() {
                    let what = if c == '`' {
                        "raw quoted string"
                    } else {
                        "character constant"
                    };
                    return Err((*line, format!("unterminated {what}")));
                }
                if c == '`' {
                    *line += inner.matches('\n').count();
                    (Token::Str(inner), len)
                } else {
                    let ch = unescape(&inner)
                        .filter(|s| s.chars().count() == 1)
                        .and_then(|s| s.chars().next())
                        .ok_or((*line, format!("malformed character constant: '{inner}'")))?;
                    (Token::Char(ch), len)
                }
            }
            c if c.is_ascii_digit()
                || ((c == '-' || c == '+' || c == '.')
                    && at(1).is_some_and(|d| d.is_ascii_digit())) =>
            {
                let mut j = i + 1;
                while bytes.get(j).is_some_and(|c| {
                    c.is_ascii_alphanumeric()
                        || *c == '.'
                        || *c == '_'
                        || ((*c == '-' || *c == '+')
                            && matches!(bytes[j - 1], 'e' | 'E' | 'p' | 'P'))
                }) {
                    j += 1;
                }
                let text: String = bytes[i..j].iter().collect();
                let value =
                    number(&text).ok_or((*line, format!("bad number syntax: \"{text}\"")))?;
                (Token::Number(value), j - i)
            }
            c if c.is_alphabetic() || c == '_' => {
                let end = word_end(i);
                (Token::Ident(bytes[i..end].iter().collect()), end - i)
            }
            c => return Err((*line, format!("unexpected {c:?} in command"))),
        };
        tokens.push(token);
        advance(&mut i, &mut byte, len, &bytes);
    }
}

/// A Go interpreted string literal at the start of `s`: its value and length in chars.
fn quoted(s: &[char]) -> Option<(String, usize)> {
    let mut j = 1;
    while j < s.len() {
        match s[j] {
            '\\' => j += 2,
            '"' => {
                let inner: String = s[1..j].iter().collect();
                return unescape(&inner).map(|v| (v, j + 1));
            }
            '\n' => return None,
            _ => j += 1,
        }
    }
    None
}

/// Go's escapes in string and character literals.
fn unescape(s: &str) -> Option<String> {
    let mut out = String::new();
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        let e = chars.next()?;
        let hex = |chars: &mut std::str::Chars, n: usize| -> Option<char> {
            let digits: String = chars.by_ref().take(n).collect();
            char::from_u32(u32::from_str_radix(&digits, 16).ok()?)
        };
        out.push(match e {
            'n' => '\n',
            't' => '\t',
            'r' => '\r',
            'a' => '\u{7}',
            'b' => '\u{8}',
            'f' => '\u{c}',
            'v' => '\u{b}',
            '\\' => '\\',
            '"' => '"',
            '\'' => '\'',
            'x' => hex(&mut chars, 2)?,
            'u' => hex(&mut chars, 4)?,
            'U' => hex(&mut chars, 8)?,
            _ => return None,
        });
    }
    Some(out)
}

/// A Go number literal (decimal, hex, octal, binary, float, with `_` separators), typed as
/// Go types a constant passed to a function of `interface{}` arguments: float when written
/// with a point or a decimal exponent, else int.
fn number(text: &str) -> Option<Number> {
    let lower = text.to_ascii_lowercase();
    let hex = lower.trim_start_matches(['-', '+']).starts_with("0x");
    if !hex && lower.contains(['.', 'e']) {
        return lower
            .replace('_', "")
            .parse::<f64>()
            .ok()
            .map(Number::Float);
    }
    let value = integer(text)?;
    Some(match value as i64 {
        i if i as f64 == value => Number::Int(i),
        _ => Number::Float(value),
    })
}

fn integer(text: &str) -> Option<f64> {
    let clean = text.replace('_', "");
    let (negative, digits) = match clean.strip_prefix('-') {
        Some(d) => (true, d.to_string()),
        None => (false, clean.trim_start_matches('+').to_string()),
    };
    let lower = digits.to_ascii_lowercase();
    let value = if let Some(h) = lower.strip_prefix("0x") {
        u64::from_str_radix(h, 16).ok()? as f64
    } else if let Some(b) = lower.strip_prefix("0b") {
        u64::from_str_radix(b, 2).ok()? as f64
    } else if let Some(o) = lower.strip_prefix("0o") {
        u64::from_str_radix(o, 8).ok()? as f64
    } else {
        lower.parse::<f64>().ok()?
    };
    Some(if negative { -value } else { value })
}

enum Stop {
    Eof,
    End(usize),
    /// `{{else ...}}`: its tokens (`else if ...` is a nested branch) and line.
    Else(Vec<Token>, usize),
}

struct Parser {
    pieces: std::vec::IntoIter<Piece>,
    scopes: Vec<Vec<String>>,
    /// How many branches and definitions the parser is inside (`define` is top-level only).
    depth: usize,
    defines: BTreeMap<String, Vec<Node>>,
}

type Failure = (usize, String);

impl Parser {
    /// Nodes up to the end of input or an `{{else}}`/`{{end}}`.
    fn list(&mut self) -> Result<(Vec<Node>, Stop), Failure> {
        let mut nodes = Vec::new();
        while let Some(piece) = self.pieces.next() {
            match piece {
                Piece::Text(t) => nodes.push(Node::Text(t)),
                Piece::Action(tokens, line) => match tokens.first() {
                    Some(Token::Ident(word)) if word == "end" => {
                        if tokens.len() > 1 {
                            return Err((line, "unexpected tokens after end".into()));
                        }
                        return Ok((nodes, Stop::End(line)));
                    }
                    Some(Token::Ident(word)) if word == "else" => {
                        return Ok((nodes, Stop::Else(tokens, line)));
                    }
                    Some(Token::Ident(word))
                        if matches!(word.as_str(), "if" | "with" | "range") =>
                    {
                        let kind = match word.as_str() {
                            "if" => BranchKind::If,
                            "with" => BranchKind::With,
                            _ => BranchKind::Range,
                        };
                        nodes.push(self.branch(kind, &tokens[1..], line)?);
                    }
                    Some(Token::Ident(word)) if word == "template" => {
                        let Some(Token::Str(name)) = tokens.get(1) else {
                            return Err((line, "unexpected token in template clause".into()));
                        };
                        let pipe = match tokens.len() {
                            2 => None,
                            _ => Some(self.pipeline(&tokens[2..], line, false)?),
                        };
                        nodes.push(Node::Call(name.clone(), pipe));
                    }
                    Some(Token::Ident(word)) if word == "define" || word == "block" => {
                        let Some(Token::Str(name)) = tokens.get(1) else {
                            return Err((line, format!("unexpected token in {word} clause")));
                        };
                        if word == "define" && (self.depth > 0 || tokens.len() > 2) {
                            return Err((line, "unexpected <define> in command".into()));
                        }
                        let pipe = match tokens.len() {
                            2 => None,
                            _ => Some(self.pipeline(&tokens[2..], line, false)?),
                        };
                        self.define(name, line)?;
                        if word == "block" {
                            nodes.push(Node::Call(name.clone(), pipe));
                        }
                    }
                    Some(Token::Ident(word)) if word == "break" || word == "continue" => {
                        return Err((line, format!("{word} is not supported in rule templates")));
                    }
                    None => return Err((line, "missing value for command".into())),
                    _ => {
                        let pipe = self.pipeline(&tokens, line, true)?;
                        nodes.push(Node::Action(pipe));
                    }
                },
            }
        }
        Ok((nodes, Stop::Eof))
    }

    /// The body of `{{ define "name" }}` or `{{ block "name" }}` up to its `{{ end }}`; it
    /// sees only the variable `$`, as in Go.
    fn define(&mut self, name: &str, line: usize) -> Result<(), Failure> {
        let outer = std::mem::replace(&mut self.scopes, vec![vec!["$".to_string()]]);
        self.depth += 1;
        let (body, end) = self.list()?;
        self.depth -= 1;
        self.scopes = outer;
        match end {
            Stop::End(_) => {}
            Stop::Else(_, l) => return Err((l, "unexpected {{else}}".into())),
            Stop::Eof => return Err((line, "unexpected EOF".into())),
        }
        if self.defines.get(name).is_some_and(|b| !b.is_empty()) && !body.is_empty() {
            return Err((
                line,
                format!("template: multiple definition of template {name:?}"),
            ));
        }
        self.defines.insert(name.to_string(), body);
        Ok(())
    }

    fn branch(&mut self, kind: BranchKind, tokens: &[Token], line: usize) -> Result<Node, Failure> {
        let name = match kind {
            BranchKind::If => "if",
            BranchKind::With => "with",
            BranchKind::Range => "range",
        };
        if tokens.is_empty() {
            return Err((line, format!("missing value for {name}")));
        }
        self.scopes.push(Vec::new());
        self.depth += 1;
        let pipe = self.pipeline(tokens, line, kind == BranchKind::Range)?;
        let (body, end) = self.list()?;
        self.scopes.pop();
        let otherwise = match end {
            Stop::Eof => return Err((line, format!("unexpected EOF in {name}"))),
            Stop::End(_) => Vec::new(),
            Stop::Else(tokens, else_line) => {
                match tokens.get(1) {
                    // `{{else if ...}}` (and `else with`) is a nested branch that shares the end.
                    Some(Token::Ident(w))
                        if (w == "if" && kind == BranchKind::If)
                            || (w == "with" && kind == BranchKind::With) =>
                    {
                        vec![self.branch(kind, &tokens[2..], else_line)?]
                    }
                    Some(_) => return Err((else_line, "unexpected tokens after else".into())),
                    None => {
                        self.scopes.push(Vec::new());
                        let (otherwise, end) = self.list()?;
                        self.scopes.pop();
                        match end {
                            Stop::End(_) => otherwise,
                            Stop::Else(_, l) => {
                                return Err((l, "expected end; found {{else}}".into()));
                            }
                            Stop::Eof => return Err((line, format!("unexpected EOF in {name}"))),
                        }
                    }
                }
            }
        };
        self.depth -= 1;
        Ok(Node::Branch {
            kind,
            pipe,
            body,
            otherwise,
        })
    }

    fn defined(&self, var: &str) -> bool {
        self.scopes.iter().any(|s| s.iter().any(|v| v == var))
    }

    /// A pipeline; `two_vars` allows `$i, $v :=` (range).
    fn pipeline(
        &mut self,
        tokens: &[Token],
        line: usize,
        two_vars: bool,
    ) -> Result<Pipeline, Failure> {
        let mut rest = tokens;
        let mut vars = Vec::new();
        let mut declares = false;
        // `$x :=`, `$x =`, `$i, $v :=`
        let split = rest
            .iter()
            .position(|t| matches!(t, Token::Declare | Token::Assign));
        if let Some(k) = split {
            let names: Vec<&Token> = rest[..k]
                .iter()
                .filter(|t| !matches!(t, Token::Comma))
                .collect();
            let all_vars = names.iter().all(|t| matches!(t, Token::Variable(_)));
            if all_vars && !names.is_empty() && (names.len() == 1 || (names.len() == 2 && two_vars))
            {
                declares = matches!(rest[k], Token::Declare);
                for t in names {
                    if let Token::Variable(v) = t {
                        if !declares && !self.defined(v) {
                            return Err((line, format!("undefined variable \"{v}\"")));
                        }
                        vars.push(v.clone());
                    }
                }
                rest = &rest[k + 1..];
            }
        }
        let mut commands = Vec::new();
        for part in split_pipes(rest) {
            if part.is_empty() {
                return Err((line, "missing command".into()));
            }
            commands.push(self.command(part, line)?);
        }
        if commands.is_empty() {
            return Err((line, "missing value for command".into()));
        }
        if declares && let Some(scope) = self.scopes.last_mut() {
            scope.extend(vars.iter().cloned());
        }
        Ok(Pipeline {
            vars,
            declares,
            commands,
        })
    }

    fn command(&mut self, tokens: &[Token], line: usize) -> Result<Command, Failure> {
        let mut args = Vec::new();
        let mut i = 0;
        while i < tokens.len() {
            let (operand, used) = self.operand(&tokens[i..], line)?;
            args.push(operand);
            i += used;
        }
        if args.len() > 1
            && !matches!(
                args[0],
                Operand::Function(_) | Operand::Field(_) | Operand::Variable(..)
            )
        {
            return Err((line, "can't give argument to non-function".into()));
        }
        Ok(Command { args })
    }

    /// One operand at the start of `tokens` and how many tokens it took.
    fn operand(&mut self, tokens: &[Token], line: usize) -> Result<(Operand, usize), Failure> {
        let fields = |from: usize| {
            let mut chain = Vec::new();
            let mut j = from;
            while let Some(Token::Field(f)) = tokens.get(j) {
                chain.push(f.clone());
                j += 1;
            }
            (chain, j)
        };
        match &tokens[0] {
            Token::Field(_) => {
                let (chain, used) = fields(0);
                Ok((Operand::Field(chain), used))
            }
            Token::Dot => Ok((Operand::Field(Vec::new()), 1)),
            Token::Variable(v) => {
                if !self.defined(v) {
                    return Err((line, format!("undefined variable \"{v}\"")));
                }
                let (chain, used) = fields(1);
                Ok((Operand::Variable(v.clone(), chain), used))
            }
            Token::Ident(word) => match word.as_str() {
                "true" => Ok((Operand::Bool(true), 1)),
                "false" => Ok((Operand::Bool(false), 1)),
                "nil" => Ok((Operand::Nil, 1)),
                w if FUNCTIONS.contains(&w) => Ok((Operand::Function(w.to_string()), 1)),
                w => Err((line, format!("function \"{w}\" not defined"))),
            },
            Token::Str(s) => Ok((Operand::Str(s.clone()), 1)),
            Token::Char(c) => Ok((Operand::Number(Number::Int(i64::from(u32::from(*c)))), 1)),
            Token::Number(n) => Ok((Operand::Number(*n), 1)),
            Token::LeftParen => {
                let mut depth = 0;
                let mut close = None;
                for (j, t) in tokens.iter().enumerate() {
                    match t {
                        Token::LeftParen => depth += 1,
                        Token::RightParen => {
                            depth -= 1;
                            if depth == 0 {
                                close = Some(j);
                                break;
                            }
                        }
                        _ => {}
                    }
                }
                let close = close.ok_or((line, "unclosed left paren".to_string()))?;
                let inner = self.pipeline(&tokens[1..close], line, false)?;
                let (chain, used) = fields(close + 1);
                Ok((Operand::Group(Box::new(inner), chain), used))
            }
            Token::RightParen => Err((line, "unexpected right paren".into())),
            Token::Pipe | Token::Comma | Token::Declare | Token::Assign => {
                Err((line, format!("unexpected {:?} in operand", tokens[0])))
            }
        }
    }
}

/// The commands of a pipeline: `tokens` split at the pipes outside parentheses.
fn split_pipes(tokens: &[Token]) -> Vec<&[Token]> {
    let mut parts = Vec::new();
    let mut depth = 0;
    let mut start = 0;
    for (i, t) in tokens.iter().enumerate() {
        match t {
            Token::LeftParen => depth += 1,
            Token::RightParen => depth -= 1,
            Token::Pipe if depth == 0 => {
                parts.push(&tokens[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    if start < tokens.len() || !parts.is_empty() {
        parts.push(&tokens[start..]);
    }
    parts
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<Template, String> {
        Template::parse("__alert_A", s).map_err(|e| e.to_string())
    }

    #[test]
    fn trim_markers_remove_the_space_beside_them() {
        let t = parse("x {{- $labels.job -}} y").unwrap();
        assert_eq!(t.nodes[0], Node::Text("x".into()));
        assert_eq!(t.nodes[2], Node::Text("y".into()));
        // `{{-3}}` is the number -3, not a trim marker.
        let t = parse("a {{-3}}").unwrap();
        assert_eq!(t.nodes[0], Node::Text("a ".into()));
    }

    #[test]
    fn else_if_nests_a_branch_that_shares_the_end() {
        let t = parse(
            "{{ if gt $value 1.0 }}big{{ else if eq $value 0.0 }}zero{{ else }}small{{ end }}",
        )
        .unwrap();
        let Node::Branch { otherwise, .. } = &t.nodes[0] else {
            panic!("{t:?}");
        };
        let Node::Branch {
            body, otherwise, ..
        } = &otherwise[0]
        else {
            panic!("{otherwise:?}");
        };
        assert_eq!(body, &vec![Node::Text("zero".into())]);
        assert_eq!(otherwise, &vec![Node::Text("small".into())]);
    }

    #[test]
    fn errors_are_worded_as_go_words_them() {
        for (source, want) in [
            ("{{ $labels.x ", "template: __alert_A:1: unclosed action"),
            (
                "a\nb\n{{ nosuchfn }}",
                "template: __alert_A:3: function \"nosuchfn\" not defined",
            ),
            ("{{ $nope }}", "undefined variable \"$nope\""),
            ("{{ if }}x{{ end }}", "missing value for if"),
            (
                "{{ range $k, $v := $labels }}{{ end }}{{ $k }}",
                "undefined variable \"$k\"",
            ),
            ("{{ end }}", "unexpected {{end}}"),
            ("{{ if true }}x", "unexpected EOF"),
        ] {
            let got = parse(source).unwrap_err();
            assert!(got.contains(want), "{source:?}: {got}");
        }
        parse("{{ $x := 1 }}{{ $x = 2 }}{{ $x }}{{ query \"up\" | first | value | humanize }}")
            .unwrap();
    }
}
