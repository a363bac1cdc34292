//! Running rule templates: Go's `text/template` execution (with `missingkey=zero`) over the
//! data Prometheus gives alert templates, with Go's and Prometheus's functions
//! (template/template.go `NewTemplateExpander`).

use std::collections::BTreeMap;

use regex::Regex;
use strata_wire::duration::parse_duration_ms;

use super::gofmt::{self, Arg};
use super::template::{BranchKind, Command, Node, Number, Operand, Pipeline, Template};

/// One sample of a `query` result, as templates see it (`.Labels`, `.Value`).
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

/// What templates run on: `.Labels`, `.ExternalLabels`, `.ExternalURL` and `.Value`, which
/// the preamble also names `$labels`, `$externalLabels`, `$externalURL` and `$value`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Data {
    pub labels: BTreeMap<String, String>,
    pub external_labels: BTreeMap<String, String>,
    pub external_url: String,
    pub value: f64,
}

/// An instant query at the evaluation's timestamp, for the `query` function.
pub type QueryFn<'a> = &'a dyn Fn(&str) -> Result<Vec<Sample>, String>;

/// Where a template runs: its data (whose external URL also serves `externalURL` and
/// `pathPrefix`) and the query function.
pub struct Context<'a> {
    pub data: &'a Data,
    pub query: QueryFn<'a>,
}

impl std::fmt::Debug for Context<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context")
            .field("data", self.data)
            .finish_non_exhaustive()
    }
}

/// A template value, typed as Go types it (int and float64 do not compare).
#[derive(Debug, Clone, PartialEq)]
enum Value {
    Nil,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    /// `map[string]string` (labels): a missing key reads as "".
    Labels(BTreeMap<String, String>),
    /// `map[string]interface{}` (`args`): a missing key reads as no value.
    Args(BTreeMap<String, Value>),
    Samples(Vec<Sample>),
    Sample(Sample),
    /// `*time.Time`, in milliseconds.
    Time(i64),
    Data,
}

impl Value {
    fn type_name(&self) -> &'static str {
        match self {
            Value::Nil => "<nil>",
            Value::Bool(_) => "bool",
            Value::Int(_) => "int",
            Value::Float(_) => "float64",
            Value::Str(_) => "string",
            Value::Labels(_) => "map[string]string",
            Value::Args(_) => "map[string]interface {}",
            Value::Samples(_) => "template.queryResult",
            Value::Sample(_) => "*template.sample",
            Value::Time(_) => "*time.Time",
            Value::Data => "template.tmplData",
        }
    }

    /// `fmt`'s `%v`.
    fn plain(&self) -> String {
        let map = |m: &mut dyn Iterator<Item = (String, String)>| {
            let pairs: Vec<String> = m.map(|(k, v)| format!("{k}:{v}")).collect();
            format!("map[{}]", pairs.join(" "))
        };
        let sample = |s: &Sample| {
            let labels = map(&mut s.labels.iter().map(|(k, v)| (k.clone(), v.clone())));
            format!("&{{{labels} {}}}", gofmt::format_float(s.value, 'g', -1))
        };
        match self {
            Value::Nil => "<nil>".into(),
            Value::Bool(b) => b.to_string(),
            Value::Int(i) => i.to_string(),
            Value::Float(f) => gofmt::format_float(*f, 'g', -1),
            Value::Str(s) => s.clone(),
            Value::Labels(m) => map(&mut m.iter().map(|(k, v)| (k.clone(), v.clone()))),
            Value::Args(m) => map(&mut m.iter().map(|(k, v)| (k.clone(), v.plain()))),
            Value::Samples(v) => {
                let items: Vec<String> = v.iter().map(sample).collect();
                format!("[{}]", items.join(" "))
            }
            Value::Sample(s) => sample(s),
            Value::Time(ms) => gofmt::time_string(*ms),
            Value::Data => "{...}".into(),
        }
    }

    fn arg<'a>(&'a self, text: &'a mut String) -> Arg<'a> {
        match self {
            Value::Int(i) => Arg::Int(*i),
            Value::Float(f) => Arg::Float(*f),
            Value::Str(s) => Arg::Str(s),
            Value::Bool(b) => Arg::Bool(*b),
            other => {
                *text = other.plain();
                Arg::Other(other.type_name(), text)
            }
        }
    }

    /// Go's truth: non-zero, non-empty, non-nil.
    fn truth(&self) -> bool {
        match self {
            Value::Nil => false,
            Value::Bool(b) => *b,
            Value::Int(i) => *i != 0,
            Value::Float(f) => *f != 0.0,
            Value::Str(s) => !s.is_empty(),
            Value::Labels(m) => !m.is_empty(),
            Value::Args(m) => !m.is_empty(),
            Value::Samples(v) => !v.is_empty(),
            Value::Sample(_) | Value::Time(_) | Value::Data => true,
        }
    }
}

impl From<Number> for Value {
    fn from(n: Number) -> Value {
        match n {
            Number::Int(i) => Value::Int(i),
            Number::Float(f) => Value::Float(f),
        }
    }
}

/// A failure while running a template, worded as Go's
/// (`template: NAME: executing "NAME" at <humanize>: error calling humanize: ...`).
type Failure = String;

/// Runs `template` and returns its text, or Go's wording of why it failed.
pub fn execute(template: &Template, ctx: &Context) -> Result<String, String> {
    let mut run = Run {
        template,
        ctx,
        vars: Vec::new(),
        out: String::new(),
        depth: 0,
    };
    for (name, value) in [
        ("$", Value::Data),
        ("$labels", Value::Labels(ctx.data.labels.clone())),
        (
            "$externalLabels",
            Value::Labels(ctx.data.external_labels.clone()),
        ),
        ("$externalURL", Value::Str(ctx.data.external_url.clone())),
        ("$value", Value::Float(ctx.data.value)),
    ] {
        run.vars.push((name.to_string(), value));
    }
    run.list(&template.nodes, &Value::Data)
        .map_err(|e| format!("template: {}: {e}", template.name))?;
    Ok(run.out)
}

/// Expands a label or annotation text as Prometheus does for an alert: on failure the
/// result is `<error expanding template: ...>` (rules/alerting.go).
pub fn expand(name: &str, text: &str, ctx: &Context) -> Result<String, String> {
    let template =
        Template::parse(name, text).map_err(|e| format!("error parsing template {name}: {e}"))?;
    execute(&template, ctx).map_err(|e| format!("error executing template {name}: {e}"))
}

struct Run<'a> {
    template: &'a Template,
    ctx: &'a Context<'a>,
    vars: Vec<(String, Value)>,
    out: String,
    depth: usize,
}

/// Most nested `{{ template }}` calls (Go allows 100000 on its growable stacks; templates run
/// here on a fixed thread stack, and rule templates nest a few levels at most).
const MAX_DEPTH: usize = 200;

impl Run<'_> {
    fn list(&mut self, nodes: &[Node], dot: &Value) -> Result<(), Failure> {
        for node in nodes {
            self.node(node, dot)?;
        }
        Ok(())
    }

    fn node(&mut self, node: &Node, dot: &Value) -> Result<(), Failure> {
        match node {
            Node::Text(t) => self.out.push_str(t),
            Node::Action(pipe) => {
                let value = self.pipeline(pipe, dot)?;
                if pipe.vars.is_empty() {
                    self.print(&value);
                }
            }
            Node::Branch {
                kind,
                pipe,
                body,
                otherwise,
            } => {
                let mark = self.vars.len();
                let result = self.branch(*kind, pipe, body, otherwise, dot);
                self.vars.truncate(mark);
                result?;
            }
            Node::Call(name, pipe) => {
                let Some(body) = self.template.defines.get(name) else {
                    return Err(format!("no such template {name:?}"));
                };
                let value = match pipe {
                    Some(p) => self.pipeline(p, dot)?,
                    None => Value::Nil,
                };
                self.depth += 1;
                if self.depth > MAX_DEPTH {
                    return Err(format!("exceeded maximum template depth ({MAX_DEPTH})"));
                }
                let outer = std::mem::replace(&mut self.vars, vec![("$".into(), value.clone())]);
                let result = self.list(body, &value);
                self.vars = outer;
                self.depth -= 1;
                result?;
            }
        }
        Ok(())
    }

    fn branch(
        &mut self,
        kind: BranchKind,
        pipe: &Pipeline,
        body: &[Node],
        otherwise: &[Node],
        dot: &Value,
    ) -> Result<(), Failure> {
        if kind != BranchKind::Range {
            let value = self.pipeline(pipe, dot)?;
            return match (value.truth(), kind) {
                (true, BranchKind::With) => self.list(body, &value),
                (true, _) => self.list(body, dot),
                (false, _) => self.list(otherwise, dot),
            };
        }
        let value = self.commands(&pipe.commands, dot)?;
        let items: Vec<(Value, Value)> = match value {
            Value::Samples(v) => v
                .into_iter()
                .enumerate()
                .map(|(i, s)| (Value::Int(i as i64), Value::Sample(s)))
                .collect(),
            Value::Labels(m) => m
                .into_iter()
                .map(|(k, v)| (Value::Str(k), Value::Str(v)))
                .collect(),
            Value::Args(m) => m.into_iter().map(|(k, v)| (Value::Str(k), v)).collect(),
            Value::Nil => Vec::new(),
            other => return Err(format!("range can't iterate over {}", other.plain())),
        };
        if items.is_empty() {
            return self.list(otherwise, dot);
        }
        for (key, item) in items {
            let mark = self.vars.len();
            match pipe.vars.as_slice() {
                [v] => self.vars.push((v.clone(), item.clone())),
                [k, v] => {
                    self.vars.push((k.clone(), key));
                    self.vars.push((v.clone(), item.clone()));
                }
                _ => {}
            }
            let result = self.list(body, &item);
            self.vars.truncate(mark);
            result?;
        }
        Ok(())
    }

    /// Prints a value as text/template does: no value as `<no value>`, else `%v`.
    fn print(&mut self, value: &Value) {
        match value {
            Value::Nil => self.out.push_str("<no value>"),
            v => self.out.push_str(&v.plain()),
        }
    }

    fn pipeline(&mut self, pipe: &Pipeline, dot: &Value) -> Result<Value, Failure> {
        let value = self.commands(&pipe.commands, dot)?;
        for var in &pipe.vars {
            if pipe.declares {
                self.vars.push((var.clone(), value.clone()));
            } else if let Some(slot) = self.vars.iter_mut().rev().find(|(n, _)| n == var) {
                slot.1 = value.clone();
            }
        }
        Ok(value)
    }

    fn commands(&mut self, commands: &[Command], dot: &Value) -> Result<Value, Failure> {
        let mut value = None;
        for command in commands {
            value = Some(self.command(command, dot, value)?);
        }
        Ok(value.unwrap_or(Value::Nil))
    }

    fn command(
        &mut self,
        command: &Command,
        dot: &Value,
        piped: Option<Value>,
    ) -> Result<Value, Failure> {
        let Some(first) = command.args.first() else {
            return Err("empty command".into());
        };
        if let Operand::Function(name) = first {
            let rest = &command.args[1..];
            if name == "and" || name == "or" {
                return self.and_or(name == "and", rest, dot, piped);
            }
            let mut args = Vec::with_capacity(rest.len() + 1);
            for operand in rest {
                args.push(self.operand(operand, dot)?);
            }
            args.extend(piped);
            return self
                .call(name, args)
                .map_err(|e| format!("executing {:?} at <{name}>: {e}", self.template.name));
        }
        if command.args.len() > 1 || piped.is_some() {
            return Err(format!(
                "executing {:?}: can't give argument to non-function",
                self.template.name
            ));
        }
        if matches!(first, Operand::Nil) {
            return Err("nil is not a command".into());
        }
        self.operand(first, dot)
    }

    /// `and` and `or` stop at the first argument that decides the result (Go 1.18).
    fn and_or(
        &mut self,
        and: bool,
        operands: &[Operand],
        dot: &Value,
        piped: Option<Value>,
    ) -> Result<Value, Failure> {
        let name = if and { "and" } else { "or" };
        if operands.len() + usize::from(piped.is_some()) == 0 {
            return Err(format!(
                "wrong number of args for {name}: want at least 1 got 0"
            ));
        }
        let mut last = Value::Nil;
        for operand in operands {
            last = self.operand(operand, dot)?;
            if last.truth() != and {
                return Ok(last);
            }
        }
        Ok(piped.unwrap_or(last))
    }

    fn variable(&self, name: &str) -> Result<Value, Failure> {
        self.vars
            .iter()
            .rev()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
            .ok_or_else(|| format!("undefined variable: {name}"))
    }

    fn operand(&mut self, operand: &Operand, dot: &Value) -> Result<Value, Failure> {
        match operand {
            Operand::Field(chain) => self.fields(dot.clone(), chain),
            Operand::Variable(name, chain) => {
                let value = self.variable(name)?;
                self.fields(value, chain)
            }
            Operand::Function(name) => self
                .call(name, Vec::new())
                .map_err(|e| format!("executing {:?} at <{name}>: {e}", self.template.name)),
            Operand::Str(s) => Ok(Value::Str(s.clone())),
            Operand::Number(n) => Ok(Value::from(*n)),
            Operand::Bool(b) => Ok(Value::Bool(*b)),
            Operand::Nil => Ok(Value::Nil),
            Operand::Group(pipe, chain) => {
                let value = self.pipeline(pipe, dot)?;
                self.fields(value, chain)
            }
        }
    }

    fn fields(&self, mut value: Value, chain: &[String]) -> Result<Value, Failure> {
        for field in chain {
            value = self.field(value, field)?;
        }
        Ok(value)
    }

    fn field(&self, value: Value, field: &str) -> Result<Value, Failure> {
        let data = self.ctx.data;
        Ok(match (value, field) {
            (Value::Data, "Labels") => Value::Labels(data.labels.clone()),
            (Value::Data, "ExternalLabels") => Value::Labels(data.external_labels.clone()),
            (Value::Data, "ExternalURL") => Value::Str(data.external_url.clone()),
            (Value::Data, "Value") => Value::Float(data.value),
            (Value::Labels(mut m), key) => Value::Str(m.remove(key).unwrap_or_default()),
            (Value::Args(mut m), key) => m.remove(key).unwrap_or(Value::Nil),
            (Value::Sample(s), "Labels") => Value::Labels(s.labels),
            (Value::Sample(s), "Value") => Value::Float(s.value),
            (Value::Nil, key) => {
                return Err(format!("nil pointer evaluating interface {{}}.{key}"));
            }
            (other, key) => {
                return Err(format!(
                    "can't evaluate field {key} in type {}",
                    other.type_name()
                ));
            }
        })
    }

    fn call(&self, name: &str, args: Vec<Value>) -> Result<Value, Failure> {
        let data = self.ctx.data;
        let arity = |n: usize| -> Result<(), Failure> {
            if args.len() == n {
                Ok(())
            } else {
                Err(format!(
                    "wrong number of args for {name}: want {n} got {}",
                    args.len()
                ))
            }
        };
        let text = |i: usize| -> Result<&str, Failure> {
            match &args[i] {
                Value::Str(s) => Ok(s),
                other => Err(format!(
                    "wrong type for value; expected string; got {}",
                    other.type_name()
                )),
            }
        };
        let calling = |e: String| format!("error calling {name}: {e}");
        let float = |i: usize| to_float(&args[i]).map_err(calling);
        let sample = |i: usize| match &args[i] {
            Value::Sample(s) => Ok(s.clone()),
            other => Err(format!(
                "wrong type for value; expected *template.sample; got {}",
                other.type_name()
            )),
        };
        let samples = |i: usize| match &args[i] {
            Value::Samples(v) => Ok(v.clone()),
            Value::Nil => Ok(Vec::new()),
            other => Err(format!(
                "wrong type for value; expected template.queryResult; got {}",
                other.type_name()
            )),
        };
        let one_string = |args: &[Value]| match args {
            [Value::Str(s)] => s.clone(),
            _ => sprint(args),
        };
        Ok(match name {
            "print" => Value::Str(sprint(&args)),
            "println" => {
                let parts: Vec<String> = args.iter().map(Value::plain).collect();
                Value::Str(parts.join(" ") + "\n")
            }
            "printf" => {
                if args.is_empty() {
                    return Err(format!(
                        "wrong number of args for {name}: want at least 1 got 0"
                    ));
                }
                let format = text(0)?.to_string();
                let mut texts = vec![String::new(); args.len()];
                let fmt_args: Vec<Arg> = args[1..]
                    .iter()
                    .zip(texts.iter_mut())
                    .map(|(v, t)| v.arg(t))
                    .collect();
                Value::Str(gofmt::sprintf(&format, &fmt_args))
            }
            "not" => {
                arity(1)?;
                Value::Bool(!args[0].truth())
            }
            "len" => {
                arity(1)?;
                Value::Int(match &args[0] {
                    Value::Str(s) => s.len(),
                    Value::Labels(m) => m.len(),
                    Value::Args(m) => m.len(),
                    Value::Samples(v) => v.len(),
                    other => return Err(calling(format!("len of type {}", other.type_name()))),
                } as i64)
            }
            "index" => {
                let Some((item, keys)) = args.split_first() else {
                    return Err(format!(
                        "wrong number of args for {name}: want at least 1 got 0"
                    ));
                };
                let mut item = item.clone();
                for key in keys {
                    item = index(item, key).map_err(calling)?;
                }
                item
            }
            "slice" => {
                let Some((item, bounds)) = args.split_first() else {
                    return Err(format!(
                        "wrong number of args for {name}: want at least 1 got 0"
                    ));
                };
                slice(item, bounds).map_err(calling)?
            }
            "eq" | "ne" | "lt" | "le" | "gt" | "ge" => {
                compare(name, &args).map_err(calling).map(Value::Bool)?
            }
            "html" => Value::Str(html_escape(&one_string(&args))),
            "js" => Value::Str(js_escape(&one_string(&args))),
            "urlquery" => Value::Str(query_escape(&one_string(&args))),
            "call" => return Err(calling("call of nil".into())),
            "query" => {
                arity(1)?;
                Value::Samples((self.ctx.query)(text(0)?).map_err(calling)?)
            }
            "first" => {
                arity(1)?;
                let v = samples(0)?;
                Value::Sample(
                    v.into_iter().next().ok_or_else(|| {
                        calling("first() called on vector with no elements".into())
                    })?,
                )
            }
            "label" => {
                arity(2)?;
                let s = sample(1)?;
                Value::Str(s.labels.get(text(0)?).cloned().unwrap_or_default())
            }
            "value" => {
                arity(1)?;
                Value::Float(sample(0)?.value)
            }
            "strvalue" => {
                arity(1)?;
                Value::Str(
                    sample(0)?
                        .labels
                        .get("__value__")
                        .cloned()
                        .unwrap_or_default(),
                )
            }
            "args" => Value::Args(
                args.into_iter()
                    .enumerate()
                    .map(|(i, v)| (format!("arg{i}"), v))
                    .collect(),
            ),
            "reReplaceAll" => {
                arity(3)?;
                let re = Regex::new(text(0)?).map_err(|e| calling(e.to_string()))?;
                Value::Str(re.replace_all(text(2)?, text(1)?).into_owned())
            }
            "safeHtml" => {
                arity(1)?;
                Value::Str(text(0)?.to_string())
            }
            "match" => {
                arity(2)?;
                let re = Regex::new(text(0)?).map_err(|e| calling(e.to_string()))?;
                Value::Bool(re.is_match(text(1)?))
            }
            "title" => {
                arity(1)?;
                Value::Str(title(text(0)?))
            }
            "toUpper" => {
                arity(1)?;
                Value::Str(text(0)?.to_uppercase())
            }
            "toLower" => {
                arity(1)?;
                Value::Str(text(0)?.to_lowercase())
            }
            "graphLink" | "tableLink" => {
                arity(1)?;
                let tab = if name == "graphLink" { 0 } else { 1 };
                Value::Str(format!(
                    "/graph?g0.expr={}&g0.tab={tab}",
                    query_escape(text(0)?)
                ))
            }
            "sortByLabel" => {
                arity(2)?;
                let label = text(0)?;
                let mut v = samples(1)?;
                v.sort_by(|a, b| a.labels.get(label).cmp(&b.labels.get(label)));
                Value::Samples(v)
            }
            "humanize" => {
                arity(1)?;
                Value::Str(humanize(float(0)?))
            }
            "humanize1024" => {
                arity(1)?;
                Value::Str(humanize1024(float(0)?))
            }
            "humanizeDuration" => {
                arity(1)?;
                Value::Str(humanize_duration(float(0)?))
            }
            "humanizePercentage" => {
                arity(1)?;
                Value::Str(format!("{}%", g4(float(0)? * 100.0)))
            }
            "humanizeTimestamp" => {
                arity(1)?;
                let v = float(0)?;
                Value::Str(match timestamp_ms(v) {
                    Some(ms) => gofmt::time_string(ms),
                    None => g4(v),
                })
            }
            "toTime" => {
                arity(1)?;
                let v = float(0)?;
                Value::Time(timestamp_ms(v).ok_or_else(|| calling("value is NaN or Inf".into()))?)
            }
            "pathPrefix" => {
                arity(0)?;
                Value::Str(path_prefix(&data.external_url).to_string())
            }
            "externalURL" => {
                arity(0)?;
                Value::Str(data.external_url.clone())
            }
            "parseDuration" => {
                arity(1)?;
                let ms = parse_duration_ms(text(0)?).map_err(calling)?;
                Value::Float(ms as f64 / 1000.0)
            }
            "stripPort" => {
                arity(1)?;
                let hp = text(0)?;
                Value::Str(split_host_port(hp).map_or(hp, |(h, _)| h).to_string())
            }
            "stripDomain" => {
                arity(1)?;
                Value::Str(strip_domain(text(0)?))
            }
            other => return Err(format!("function {other:?} not defined")),
        })
    }
}

/// `fmt.Sprint` of template values.
fn sprint(args: &[Value]) -> String {
    let mut texts = vec![String::new(); args.len()];
    let fmt_args: Vec<Arg> = args
        .iter()
        .zip(texts.iter_mut())
        .map(|(v, t)| v.arg(t))
        .collect();
    gofmt::sprint(&fmt_args)
}

/// Prometheus's `convertToFloat`.
fn to_float(v: &Value) -> Result<f64, String> {
    match v {
        Value::Float(f) => Ok(*f),
        Value::Int(i) => Ok(*i as f64),
        Value::Str(s) => s.parse::<f64>().map_err(|_| {
            format!(
                "strconv.ParseFloat: parsing {}: invalid syntax",
                gofmt::quote(s)
            )
        }),
        other => Err(format!("can't convert {} to float", other.type_name())),
    }
}

fn index(item: Value, key: &Value) -> Result<Value, String> {
    let position = |len: usize| match key {
        Value::Int(i) if *i >= 0 && (*i as usize) < len => Ok(*i as usize),
        Value::Int(i) => Err(format!("index out of range: {i}")),
        other => Err(format!(
            "cannot index slice/array with type {}",
            other.type_name()
        )),
    };
    match (item, key) {
        (Value::Labels(mut m), Value::Str(k)) => Ok(Value::Str(m.remove(k).unwrap_or_default())),
        (Value::Args(mut m), Value::Str(k)) => Ok(m.remove(k).unwrap_or(Value::Nil)),
        (Value::Samples(v), _) => Ok(Value::Sample(v[position(v.len())?].clone())),
        (Value::Str(s), _) => Ok(Value::Int(i64::from(s.as_bytes()[position(s.len())?]))),
        (Value::Labels(_) | Value::Args(_), other) => Err(format!(
            "value has type {}; should be string",
            other.type_name()
        )),
        (other, _) => Err(format!("can't index item of type {}", other.type_name())),
    }
}

fn slice(item: &Value, bounds: &[Value]) -> Result<Value, String> {
    let len = match item {
        Value::Str(s) => s.len(),
        Value::Samples(v) => v.len(),
        other => return Err(format!("can't slice item of type {}", other.type_name())),
    };
    let mut idx = Vec::new();
    for b in bounds {
        match b {
            Value::Int(i) if *i >= 0 && (*i as usize) <= len => idx.push(*i as usize),
            Value::Int(i) => return Err(format!("index out of range: {i}")),
            other => {
                return Err(format!(
                    "cannot index slice/array with type {}",
                    other.type_name()
                ));
            }
        }
    }
    let (from, to) = match idx.as_slice() {
        [] => (0, len),
        [a] => (*a, len),
        [a, b] if a <= b => (*a, *b),
        [a, b] => return Err(format!("invalid slice index: {a} > {b}")),
        _ => return Err("too many slice indexes".into()),
    };
    Ok(match item {
        Value::Str(s) => Value::Str(
            s.get(from..to)
                .ok_or("slice of a string inside a character")?
                .to_string(),
        ),
        Value::Samples(v) => Value::Samples(v[from..to].to_vec()),
        _ => Value::Nil,
    })
}

/// Go's `eq`, `ne`, `lt`, `le`, `gt` and `ge` on basic values; int and float64 do not mix.
fn compare(name: &str, args: &[Value]) -> Result<bool, String> {
    use std::cmp::Ordering;
    let order = |a: &Value, b: &Value| -> Result<Option<Ordering>, String> {
        match (a, b) {
            (Value::Int(x), Value::Int(y)) => Ok(Some(x.cmp(y))),
            (Value::Float(x), Value::Float(y)) => Ok(x.partial_cmp(y)),
            (Value::Str(x), Value::Str(y)) => Ok(Some(x.cmp(y))),
            (Value::Bool(x), Value::Bool(y)) if matches!(name, "eq" | "ne") => Ok(Some(x.cmp(y))),
            (Value::Bool(_), Value::Bool(_)) => Err("invalid type for comparison".into()),
            (
                Value::Int(_) | Value::Float(_) | Value::Str(_) | Value::Bool(_),
                Value::Int(_) | Value::Float(_) | Value::Str(_) | Value::Bool(_),
            ) => Err("incompatible types for comparison".into()),
            _ => Err("invalid type for comparison".into()),
        }
    };
    match (name, args) {
        ("eq", [first, rest @ ..]) if !rest.is_empty() => {
            for other in rest {
                if order(first, other)? == Some(Ordering::Equal) {
                    return Ok(true);
                }
            }
            Ok(false)
        }
        (_, [a, b]) => {
            let o = order(a, b)?;
            Ok(match name {
                "eq" => o == Some(Ordering::Equal),
                "ne" => o != Some(Ordering::Equal),
                "lt" => o == Some(Ordering::Less),
                "le" => matches!(o, Some(Ordering::Less | Ordering::Equal)),
                "gt" => o == Some(Ordering::Greater),
                _ => matches!(o, Some(Ordering::Greater | Ordering::Equal)),
            })
        }
        _ => Err("missing argument for comparison".into()),
    }
}

/// `%.4g`, the precision of every `humanize` function.
fn g4(v: f64) -> String {
    gofmt::format_float(v, 'g', 4)
}

/// Scales `v` by `base` over `prefixes` while it is at least `base` (or, below 1, by 1000
/// over `small` while it is under 1) and prints it with `%.4g` and the prefix.
fn scaled(mut v: f64, base: f64, prefixes: &[&str], small: &[&str]) -> String {
    let mut prefix = "";
    if v.abs() >= 1.0 {
        for p in prefixes {
            if v.abs() < base {
                break;
            }
            prefix = p;
            v /= base;
        }
    } else {
        for p in small {
            if v.abs() >= 1.0 {
                break;
            }
            prefix = p;
            v *= 1000.0;
        }
    }
    format!("{}{prefix}", g4(v))
}

const SMALL: &[&str] = &["m", "u", "n", "p", "f", "a", "z", "y"];

fn humanize(v: f64) -> String {
    if v == 0.0 || !v.is_finite() {
        return g4(v);
    }
    scaled(v, 1000.0, &["k", "M", "G", "T", "P", "E", "Z", "Y"], SMALL)
}

fn humanize1024(v: f64) -> String {
    if v.abs() <= 1.0 || !v.is_finite() {
        return g4(v);
    }
    scaled(
        v,
        1024.0,
        &["ki", "Mi", "Gi", "Ti", "Pi", "Ei", "Zi", "Yi"],
        &[],
    )
}

fn humanize_duration(v: f64) -> String {
    if !v.is_finite() {
        return g4(v);
    }
    if v == 0.0 {
        return "0s".into();
    }
    if v.abs() >= 1.0 {
        let sign = if v < 0.0 { "-" } else { "" };
        let v = v.abs();
        let d = v as i64;
        let (days, hours, minutes, seconds) = (d / 86_400, d / 3600 % 24, d / 60 % 60, d % 60);
        return if days != 0 {
            format!("{sign}{days}d {hours}h {minutes}m {seconds}s")
        } else if hours != 0 {
            format!("{sign}{hours}h {minutes}m {seconds}s")
        } else if minutes != 0 {
            format!("{sign}{minutes}m {seconds}s")
        } else {
            format!("{sign}{}s", g4(v))
        };
    }
    format!("{}s", scaled(v, 1000.0, &[], SMALL))
}

/// `model.TimeFromUnixNano(int64(v*1e9))`: seconds to milliseconds, truncated.
fn timestamp_ms(v: f64) -> Option<i64> {
    v.is_finite()
        .then(|| ((v * 1e9) as i64).div_euclid(1_000_000))
}

/// `cases.Title(language.AmericanEnglish, cases.NoLower)`: the first letter of each word
/// upper-cased, the rest left as they are.
fn title(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut start = true;
    for c in s.chars() {
        if start && c.is_alphabetic() {
            out.extend(c.to_uppercase());
        } else {
            out.push(c);
        }
        start = !(c.is_alphanumeric() || c == '\'' || c == '_');
    }
    out
}

/// The path of an external URL (`pathPrefix`).
fn path_prefix(url: &str) -> &str {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    rest.find('/').map_or("", |i| {
        let path = &rest[i..];
        path.split(['?', '#']).next().unwrap_or(path)
    })
}

/// `net.SplitHostPort`.
fn split_host_port(hp: &str) -> Option<(&str, &str)> {
    if let Some(rest) = hp.strip_prefix('[') {
        let (host, after) = rest.split_once(']')?;
        let port = after.strip_prefix(':')?;
        return (!port.contains(':')).then_some((host, port));
    }
    let (host, port) = hp.rsplit_once(':')?;
    (!host.contains(':') && !host.contains('[')).then_some((host, port))
}

fn strip_domain(hp: &str) -> String {
    let (host, port) = split_host_port(hp).map_or((hp, None), |(h, p)| (h, Some(p)));
    if host.parse::<std::net::IpAddr>().is_ok() {
        return hp.to_string();
    }
    let short = host.split('.').next().unwrap_or(host);
    match port {
        Some(p) if short.contains(':') => format!("[{short}]:{p}"),
        Some(p) => format!("{short}:{p}"),
        None => short.to_string(),
    }
}

/// Go's `url.QueryEscape`.
pub fn query_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char);
            }
            b' ' => out.push('+'),
            b => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// Go's `template.HTMLEscapeString`.
fn html_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '\'' => out.push_str("&#39;"),
            '"' => out.push_str("&#34;"),
            '\0' => out.push('\u{fffd}'),
            c => out.push(c),
        }
    }
    out
}

/// Go's `template.JSEscapeString`.
fn js_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\'' => out.push_str("\\'"),
            '"' => out.push_str("\\\""),
            '<' => out.push_str("\\u003C"),
            '>' => out.push_str("\\u003E"),
            '&' => out.push_str("\\u0026"),
            '=' => out.push_str("\\u003D"),
            c if (c as u32) < 0x20 || c.is_control() => {
                out.push_str(&format!("\\u{:04X}", c as u32));
            }
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn samples() -> Vec<Sample> {
        (1..=3)
            .rev()
            .map(|i| Sample {
                labels: BTreeMap::from([("id".to_string(), format!("10{i}"))]),
                value: f64::from(i),
            })
            .collect()
    }

    fn run(text: &str, value: f64) -> String {
        let data = Data {
            labels: BTreeMap::from([
                ("alertname".into(), "HighLoad".into()),
                ("instance".into(), "node-1:9100".into()),
            ]),
            external_url: "http://prom.example:9090/prom".into(),
            value,
            ..Data::default()
        };
        let query = |q: &str| -> Result<Vec<Sample>, String> {
            match q {
                "series" => Ok(samples()),
                _ => Err(format!("unknown query {q}")),
            }
        };
        let ctx = Context {
            data: &data,
            query: &query,
        };
        match expand("__alert_HighLoad", text, &ctx) {
            Ok(s) => s,
            Err(e) => format!("<error expanding template: {e}>"),
        }
    }

    #[test]
    fn values_and_labels_print_as_prometheus_prints_them() {
        assert_eq!(
            run("{{ $value }} {{ .Value }}", 1234567.0),
            "1.234567e+06 1.234567e+06"
        );
        assert_eq!(
            run("{{ $labels.instance }}/{{ .Labels.missing }}/", 1.0),
            "node-1:9100//"
        );
        assert_eq!(run("{{ printf \"%.2f\" $value }}", 0.98765), "0.99");
        assert_eq!(
            run("{{ $x := 3 }}{{ $x }} {{ 1.5 }} {{ 'a' }}", 0.0),
            "3 1.5 97"
        );
        assert_eq!(
            run("{{ .Missing }}", 0.0),
            "<error expanding template: error executing template __alert_HighLoad: template: __alert_HighLoad: can't evaluate field Missing in type template.tmplData>"
        );
    }

    #[test]
    fn the_compliance_suites_templates_expand_as_expected() {
        assert_eq!(
            run(
                "{{humanize 1048576}} {{humanize1024 1048576}} {{humanizeDuration 135.3563}} {{humanizePercentage 0.959}} {{humanizeTimestamp 1643114203}}",
                0.0
            ),
            "1.049M 1Mi 2m 15s 95.9% 2022-01-25 12:36:43 +0000 UTC"
        );
        assert_eq!(
            run(
                "{{title \"this part\"}} {{toUpper \"is testing\"}} {{toLower \"THE STRINGS\"}}. {{ stripPort \"[::1]:6006\"}} {{ stripPort \"127.0.0.1:4004\"}}. {{parseDuration \"2h10m15s\"}}. {{if match \"[0-9]+\" \"1234\"}}{{reReplaceAll \"r.*d\" \"replaced\" \"rpld text\"}}{{end}}. {{if match \"[0-9]+$\" \"1234a\"}}WRONG{{end}}.",
                0.0
            ),
            "This Part IS TESTING the strings. ::1 127.0.0.1. 7815. replaced text. ."
        );
        assert_eq!(
            run(
                "{{ define \"t\" }}Args are: {{.arg0}} {{.arg1}} {{.arg2}}. {{ with query \"series\" }}first_id:{{ . | sortByLabel \"id\" | first | label \"id\"}},{{ range $v := sortByLabel \"id\" .}}{{ . | label \"id\" }}:{{ . | value }},{{end}}{{end}}{{ end }}{{ template \"t\" (args \"foo\" \"bar\" 99) }}",
                0.0
            ),
            "Args are: foo bar 99. first_id:101,101:1,102:2,103:3,"
        );
    }

    #[test]
    fn humanize_functions_follow_prometheus() {
        for (v, want) in [
            (0.0, "0"),
            (1000.0, "1k"),
            (0.001234, "1.234m"),
            (-2_500_000.0, "-2.5M"),
            (f64::INFINITY, "+Inf"),
        ] {
            assert_eq!(humanize(v), want, "{v}");
        }
        assert_eq!(humanize1024(1024.0), "1ki");
        assert_eq!(humanize1024(0.5), "0.5");
        assert_eq!(humanize_duration(0.5), "500ms");
        assert_eq!(humanize_duration(5.5), "5.5s");
        assert_eq!(humanize_duration(-90061.0), "-1d 1h 1m 1s");
        assert_eq!(humanize_duration(0.0), "0s");
    }

    #[test]
    fn go_builtins_behave_as_in_go() {
        assert_eq!(
            run("{{ if gt $value 1.0 }}big{{ else }}small{{ end }}", 2.0),
            "big"
        );
        assert!(
            run("{{ if gt $value 1 }}big{{ end }}", 2.0)
                .contains("incompatible types for comparison")
        );
        assert_eq!(
            run(
                "{{ range $k, $v := $labels }}{{ $k }}={{ $v }};{{ end }}",
                0.0
            ),
            "alertname=HighLoad;instance=node-1:9100;"
        );
        assert_eq!(
            run(
                "{{ len $labels }} {{ index $labels \"alertname\" }} {{ and 1 0 }} {{ or 0 \"x\" }} {{ not true }}",
                0.0
            ),
            "2 HighLoad 0 x false"
        );
        assert_eq!(
            run(
                "{{ print 1 2 \"a\" }} {{ html \"<a&b>\" }} {{ urlquery \"a b&c\" }}",
                0.0
            ),
            "1 2a &lt;a&amp;b&gt; a+b%26c"
        );
        assert_eq!(
            run(
                "{{ pathPrefix }} {{ tableLink \"up == 0\" }} {{ stripDomain \"node-1.example.com:9100\" }}",
                0.0
            ),
            "/prom /graph?g0.expr=up+%3D%3D+0&g0.tab=1 node-1:9100"
        );
        assert_eq!(
            run(
                "{{ with $labels.nope }}x{{ else }}none{{ end }}{{ range query \"series\" }}{{ .Labels.id }}{{ end }}",
                0.0
            ),
            "none103102101"
        );
        assert!(run("{{ query \"bad\" }}", 0.0).contains("error calling query: unknown query bad"));
        assert!(run("{{ first (query \"series\" | slice 0 0) }}", 0.0).contains("error"));
        assert_eq!(
            run("{{ toTime 1643114203.5 }}", 0.0),
            "2022-01-25 12:36:43.5 +0000 UTC"
        );
        // A template that calls itself fails; it does not exhaust the stack.
        let looped = run(
            "{{ define \"a\" }}{{ template \"a\" }}{{ end }}{{ template \"a\" }}",
            0.0,
        );
        assert!(
            looped.contains("exceeded maximum template depth"),
            "{looped}"
        );
    }
}
