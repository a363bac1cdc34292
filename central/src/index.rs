//! Symbol interning, label matchers and the postings index of the head.
//!
//! Every label name and value is stored once in [`Symbols`] and referred to by a `u32`. The
//! postings map each `(name, value)` pair to the sorted ids of the series that carry it, so a
//! matcher is answered by looking at the values of one label name, never by scanning series:
//! `=` is one lookup, `=~` tests each distinct value of the name once, and `!=` / `!~` (and any
//! matcher that matches the empty string) subtract the series whose value does not match.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use regex::Regex;
use strata_wire::Label;
use strata_wire::prompb::{LabelMatcher, MatchType};

/// Interned strings: each distinct label name or value is held once.
#[derive(Debug, Default)]
pub struct Symbols {
    ids: HashMap<Arc<str>, u32>,
    strings: Vec<Arc<str>>,
    bytes: usize,
}

impl Symbols {
    pub fn get(&self, s: &str) -> Option<u32> {
        self.ids.get(s).copied()
    }

    pub fn intern(&mut self, s: &str) -> u32 {
        if let Some(&id) = self.ids.get(s) {
            return id;
        }
        let id = self.strings.len() as u32;
        let arc: Arc<str> = Arc::from(s);
        self.bytes += s.len();
        self.strings.push(arc.clone());
        self.ids.insert(arc, id);
        id
    }

    pub fn resolve(&self, id: u32) -> &str {
        &self.strings[id as usize]
    }

    pub fn len(&self) -> usize {
        self.strings.len()
    }

    pub fn is_empty(&self) -> bool {
        self.strings.is_empty()
    }

    /// Approximate heap bytes: the strings plus the table entries.
    pub fn allocated(&self) -> usize {
        self.bytes + self.strings.capacity() * 16 + self.ids.capacity() * 28
    }
}

/// How a matcher compares a label value (the remote-read and PromQL matcher types).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MatchOp {
    Equal,
    NotEqual,
    Regex,
    NotRegex,
}

/// A label matcher. Regular expressions are fully anchored, as in Prometheus.
#[derive(Clone)]
pub struct Matcher {
    pub name: String,
    pub op: MatchOp,
    pub value: String,
    re: Option<Regex>,
}

impl fmt::Debug for Matcher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{self}")
    }
}

impl fmt::Display for Matcher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let op = match self.op {
            MatchOp::Equal => "=",
            MatchOp::NotEqual => "!=",
            MatchOp::Regex => "=~",
            MatchOp::NotRegex => "!~",
        };
        write!(f, "{}{op}{:?}", self.name, self.value)
    }
}

/// A matcher whose regular expression does not compile.
#[derive(Debug, thiserror::Error)]
#[error("invalid regular expression in matcher {name}: {source}")]
pub struct BadMatcher {
    name: String,
    #[source]
    source: Box<regex::Error>,
}

impl Matcher {
    pub fn new(op: MatchOp, name: &str, value: &str) -> Result<Self, BadMatcher> {
        let re = match op {
            MatchOp::Regex | MatchOp::NotRegex => Some(
                Regex::new(&format!("^(?s:{value})$")).map_err(|e| BadMatcher {
                    name: name.to_owned(),
                    source: Box::new(e),
                })?,
            ),
            MatchOp::Equal | MatchOp::NotEqual => None,
        };
        Ok(Self {
            name: name.to_owned(),
            op,
            value: value.to_owned(),
            re,
        })
    }

    /// Converts a remote-read matcher.
    pub fn from_remote_read(m: &LabelMatcher) -> Result<Self, BadMatcher> {
        let op = match MatchType::try_from(m.r#type).unwrap_or(MatchType::Eq) {
            MatchType::Eq => MatchOp::Equal,
            MatchType::Neq => MatchOp::NotEqual,
            MatchType::Re => MatchOp::Regex,
            MatchType::Nre => MatchOp::NotRegex,
        };
        Self::new(op, &m.name, &m.value)
    }

    /// The remote-read form of this matcher.
    pub fn to_remote_read(&self) -> LabelMatcher {
        let t = match self.op {
            MatchOp::Equal => MatchType::Eq,
            MatchOp::NotEqual => MatchType::Neq,
            MatchOp::Regex => MatchType::Re,
            MatchOp::NotRegex => MatchType::Nre,
        };
        LabelMatcher {
            r#type: t as i32,
            name: self.name.clone(),
            value: self.value.clone(),
        }
    }

    /// Whether a label value matches; a missing label is the empty string.
    pub fn matches(&self, v: &str) -> bool {
        match self.op {
            MatchOp::Equal => v == self.value,
            MatchOp::NotEqual => v != self.value,
            MatchOp::Regex => self.re.as_ref().is_some_and(|r| r.is_match(v)),
            MatchOp::NotRegex => !self.re.as_ref().is_some_and(|r| r.is_match(v)),
        }
    }
}

/// Whether a label set satisfies every matcher (a missing label matches as the empty string).
pub fn matches_all(matchers: &[Matcher], labels: &[Label]) -> bool {
    matchers.iter().all(|m| {
        let v = labels
            .iter()
            .find(|l| l.name == m.name)
            .map_or("", |l| l.value.as_str());
        m.matches(v)
    })
}

/// Parses a series selector as the HTTP API's `match[]` takes it: `metric{label="value", ...}`
/// with `=`, `!=`, `=~`, `!~` and Go-style quoted strings. At least one matcher must not match
/// the empty string, as Prometheus requires.
pub fn parse_selector(input: &str) -> Result<Vec<Matcher>, String> {
    let bad = |why: &str| format!("invalid series selector {input:?}: {why}");
    let s = input.trim();
    let ident_end = |s: &str| {
        s.char_indices()
            .find(|&(i, c)| {
                !(c.is_ascii_alphanumeric() || c == '_' || c == ':' || (i > 0 && c == '.'))
            })
            .map_or(s.len(), |(i, _)| i)
    };
    let mut matchers = Vec::new();
    let name_len = ident_end(s);
    let name = &s[..name_len];
    if !name.is_empty() {
        matchers.push(Matcher::new(MatchOp::Equal, "__name__", name).map_err(|e| e.to_string())?);
    }
    let mut rest = s[name_len..].trim_start();
    if let Some(body) = rest.strip_prefix('{') {
        rest = body;
        loop {
            rest = rest.trim_start();
            if let Some(after) = rest.strip_prefix('}') {
                rest = after;
                break;
            }
            let n = ident_end(rest);
            if n == 0 {
                return Err(bad("expected a label name"));
            }
            let label = &rest[..n];
            rest = rest[n..].trim_start();
            let (op, len) = match_op(rest)
                .ok_or_else(|| bad("expected one of = != =~ !~ after a label name"))?;
            rest = rest[len..].trim_start();
            let (value, after) =
                parse_quoted(rest).ok_or_else(|| bad("expected a quoted value"))?;
            matchers.push(Matcher::new(op, label, &value).map_err(|e| e.to_string())?);
            rest = after.trim_start();
            if let Some(after) = rest.strip_prefix(',') {
                rest = after;
            } else if !rest.starts_with('}') {
                return Err(bad("expected , or } after a matcher"));
            }
        }
    }
    if !rest.trim().is_empty() {
        return Err(bad("unexpected text after the selector"));
    }
    if matchers.is_empty() || matchers.iter().all(|m| m.matches("")) {
        return Err(bad(
            "it must contain at least one matcher that does not match the empty string",
        ));
    }
    Ok(matchers)
}

/// The matching operator `rest` starts with, and its length.
fn match_op(rest: &str) -> Option<(MatchOp, usize)> {
    if rest.starts_with("=~") {
        Some((MatchOp::Regex, 2))
    } else if rest.starts_with("!~") {
        Some((MatchOp::NotRegex, 2))
    } else if rest.starts_with("!=") {
        Some((MatchOp::NotEqual, 2))
    } else if rest.starts_with('=') {
        Some((MatchOp::Equal, 1))
    } else {
        None
    }
}

/// Parses one matcher as Alertmanager's route `matchers` take it: `severity="page"`,
/// `team=~"db|web"`, or with the value unquoted, `severity=page` (Alertmanager's
/// `labels.ParseMatcher`).
pub fn parse_matcher(input: &str) -> Result<Matcher, String> {
    let bad = |why: &str| format!("invalid matcher {input:?}: {why}");
    let s = input.trim();
    let name_len = s
        .char_indices()
        .find(|&(_, c)| !(c.is_ascii_alphanumeric() || c == '_'))
        .map_or(s.len(), |(i, _)| i);
    if name_len == 0 {
        return Err(bad("expected a label name"));
    }
    let rest = s[name_len..].trim_start();
    let (op, len) =
        match_op(rest).ok_or_else(|| bad("expected one of = != =~ !~ after the label name"))?;
    let rest = rest[len..].trim();
    let value = if rest.starts_with(['"', '\'', '`']) {
        let (value, after) = parse_quoted(rest).ok_or_else(|| bad("unterminated quoted value"))?;
        if !after.trim().is_empty() {
            return Err(bad("unexpected text after the quoted value"));
        }
        value
    } else {
        rest.to_string()
    };
    Matcher::new(op, &s[..name_len], &value).map_err(|e| bad(&e.to_string()))
}

/// A Go-style quoted string (`"..."` or `'...'` with escapes, or a raw `` `...` ``), and the
/// text after it.
fn parse_quoted(s: &str) -> Option<(String, &str)> {
    let quote = s.chars().next()?;
    if !matches!(quote, '"' | '\'' | '`') {
        return None;
    }
    let mut out = String::new();
    let mut chars = s[1..].char_indices();
    while let Some((i, c)) = chars.next() {
        if c == quote {
            return Some((out, &s[1 + i + 1..]));
        }
        if c == '\\' && quote != '`' {
            let (_, e) = chars.next()?;
            out.push(match e {
                'n' => '\n',
                't' => '\t',
                'r' => '\r',
                other => other,
            });
        } else {
            out.push(c);
        }
    }
    None
}

/// The inverted index: `(name, value)` symbol pairs to sorted series ids.
#[derive(Debug, Default)]
pub struct Postings {
    by_label: HashMap<u32, HashMap<u32, Vec<u32>>>,
    all: Vec<u32>,
}

fn insert_sorted(list: &mut Vec<u32>, id: u32) {
    match list.last() {
        Some(&last) if last >= id => {
            if let Err(pos) = list.binary_search(&id) {
                list.insert(pos, id);
            }
        }
        _ => list.push(id),
    }
}

fn remove_sorted(list: &mut Vec<u32>, id: u32) {
    if let Ok(pos) = list.binary_search(&id) {
        list.remove(pos);
    }
}

/// Intersection of two sorted lists.
pub fn intersect(a: &[u32], b: &[u32]) -> Vec<u32> {
    let (mut i, mut j) = (0, 0);
    let mut out = Vec::with_capacity(a.len().min(b.len()));
    while i < a.len() && j < b.len() {
        match a[i].cmp(&b[j]) {
            std::cmp::Ordering::Less => i += 1,
            std::cmp::Ordering::Greater => j += 1,
            std::cmp::Ordering::Equal => {
                out.push(a[i]);
                i += 1;
                j += 1;
            }
        }
    }
    out
}

/// `a` without the ids in sorted `b`.
pub fn subtract(a: &[u32], b: &[u32]) -> Vec<u32> {
    let mut j = 0;
    let mut out = Vec::with_capacity(a.len());
    for &x in a {
        while j < b.len() && b[j] < x {
            j += 1;
        }
        if j >= b.len() || b[j] != x {
            out.push(x);
        }
    }
    out
}

impl Postings {
    pub fn add(&mut self, id: u32, labels: &[(u32, u32)]) {
        for &(n, v) in labels {
            insert_sorted(
                self.by_label.entry(n).or_default().entry(v).or_default(),
                id,
            );
        }
        insert_sorted(&mut self.all, id);
    }

    pub fn remove(&mut self, id: u32, labels: &[(u32, u32)]) {
        for &(n, v) in labels {
            if let Some(values) = self.by_label.get_mut(&n) {
                if let Some(list) = values.get_mut(&v) {
                    remove_sorted(list, id);
                    if list.is_empty() {
                        values.remove(&v);
                    }
                }
                if values.is_empty() {
                    self.by_label.remove(&n);
                }
            }
        }
        remove_sorted(&mut self.all, id);
    }

    /// The distinct values of a label name with the number of series carrying each.
    pub fn values(&self, name: u32) -> impl Iterator<Item = (u32, usize)> + '_ {
        self.by_label
            .get(&name)
            .into_iter()
            .flat_map(|m| m.iter().map(|(&v, l)| (v, l.len())))
    }

    /// Every label name, unsorted.
    pub fn label_names(&self, symbols: &Symbols) -> Vec<String> {
        self.by_label
            .keys()
            .map(|&n| symbols.resolve(n).to_owned())
            .collect()
    }

    /// Every value of label `name`, unsorted.
    pub fn label_values(&self, symbols: &Symbols, name: &str) -> Vec<String> {
        symbols
            .get(name)
            .map(|n| {
                self.values(n)
                    .map(|(v, _)| symbols.resolve(v).to_owned())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Every label name with its number of distinct values and series.
    pub fn names(&self) -> impl Iterator<Item = (u32, usize, usize)> + '_ {
        self.by_label
            .iter()
            .map(|(&n, m)| (n, m.len(), m.values().map(Vec::len).sum()))
    }

    /// The ids of series with `name` set to a value that `keep` accepts, sorted.
    fn union_where(&self, symbols: &Symbols, name: &str, keep: impl Fn(&str) -> bool) -> Vec<u32> {
        let Some(values) = symbols.get(name).and_then(|n| self.by_label.get(&n)) else {
            return Vec::new();
        };
        let mut out: Vec<u32> = Vec::new();
        let mut lists = 0;
        for (&v, list) in values {
            if keep(symbols.resolve(v)) {
                out.extend_from_slice(list);
                lists += 1;
            }
        }
        if lists > 1 {
            out.sort_unstable();
            out.dedup();
        }
        out
    }

    /// Series ids matching every matcher, sorted.
    pub fn select(&self, symbols: &Symbols, matchers: &[Matcher]) -> Vec<u32> {
        let mut positive: Vec<Vec<u32>> = Vec::new();
        let mut negative: Vec<Vec<u32>> = Vec::new();
        for m in matchers {
            if m.matches("") {
                // Matches series without the label; remove those whose value does not match.
                let excluded = match m.op {
                    MatchOp::NotEqual => symbols
                        .get(&m.name)
                        .zip(symbols.get(&m.value))
                        .and_then(|(n, v)| self.by_label.get(&n)?.get(&v).cloned())
                        .unwrap_or_default(),
                    _ => self.union_where(symbols, &m.name, |v| !m.matches(v)),
                };
                negative.push(excluded);
            } else {
                let included = match m.op {
                    MatchOp::Equal => symbols
                        .get(&m.name)
                        .zip(symbols.get(&m.value))
                        .and_then(|(n, v)| self.by_label.get(&n)?.get(&v).cloned())
                        .unwrap_or_default(),
                    _ => self.union_where(symbols, &m.name, |v| m.matches(v)),
                };
                if included.is_empty() {
                    return Vec::new();
                }
                positive.push(included);
            }
        }
        positive.sort_by_key(Vec::len);
        let mut ids = match positive.split_first() {
            Some((first, rest)) => rest.iter().fold(first.clone(), |acc, l| intersect(&acc, l)),
            None => self.all.clone(),
        };
        for n in &negative {
            ids = subtract(&ids, n);
        }
        ids
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn build(series: &[&[(&str, &str)]]) -> (Symbols, Postings) {
        let mut sym = Symbols::default();
        let mut post = Postings::default();
        for (id, labels) in series.iter().enumerate() {
            let l: Vec<(u32, u32)> = labels
                .iter()
                .map(|(n, v)| (sym.intern(n), sym.intern(v)))
                .collect();
            post.add(id as u32, &l);
        }
        (sym, post)
    }

    fn m(op: MatchOp, n: &str, v: &str) -> Matcher {
        Matcher::new(op, n, v).unwrap()
    }

    #[test]
    fn every_matcher_kind_selects_like_prometheus() {
        let (sym, post) = build(&[
            &[("__name__", "up"), ("job", "node"), ("cell", "hz-01")],
            &[("__name__", "up"), ("job", "node"), ("cell", "hz-02")],
            &[("__name__", "up"), ("job", "etcd")],
            &[("__name__", "rss"), ("job", "node"), ("cell", "hz-01")],
        ]);
        let sel = |ms: &[Matcher]| post.select(&sym, ms);
        use MatchOp::*;
        assert_eq!(sel(&[m(Equal, "__name__", "up")]), vec![0, 1, 2]);
        assert_eq!(
            sel(&[m(Equal, "__name__", "up"), m(NotEqual, "cell", "hz-01")]),
            vec![1, 2]
        );
        assert_eq!(
            sel(&[m(Equal, "__name__", "up"), m(Regex, "cell", "hz-.*")]),
            vec![0, 1]
        );
        assert_eq!(
            sel(&[m(Equal, "__name__", "up"), m(NotRegex, "cell", "hz-0[2-9]")]),
            vec![0, 2]
        );
        // `cell=""` selects series without the label.
        assert_eq!(sel(&[m(Equal, "cell", "")]), vec![2]);
        assert_eq!(sel(&[m(Regex, "cell", ".*")]), vec![0, 1, 2, 3]);
        assert_eq!(sel(&[m(Regex, "cell", ".+")]), vec![0, 1, 3]);
        // Anchored: `hz` alone does not match `hz-01`.
        assert!(sel(&[m(Regex, "cell", "hz")]).is_empty());
        assert!(sel(&[m(Equal, "__name__", "nope")]).is_empty());
    }

    #[test]
    fn removed_series_leave_no_postings() {
        let mut sym = Symbols::default();
        let mut post = Postings::default();
        let l = vec![(sym.intern("__name__"), sym.intern("up"))];
        post.add(7, &l);
        post.add(3, &l);
        post.remove(7, &l);
        assert_eq!(
            post.select(&sym, &[m(MatchOp::Equal, "__name__", "up")]),
            vec![3]
        );
        post.remove(3, &l);
        assert_eq!(post.names().count(), 0);
    }

    #[test]
    fn selectors_parse_like_the_http_api() {
        let ms = parse_selector(r#"up{job="node", cell=~'hz-.*',x!="a\"b"}"#).unwrap();
        let shown: Vec<String> = ms.iter().map(ToString::to_string).collect();
        assert_eq!(
            shown,
            vec![
                r#"__name__="up""#,
                r#"job="node""#,
                r#"cell=~"hz-.*""#,
                r#"x!="a\"b""#
            ]
        );
        assert_eq!(parse_selector("{job=\"node\",}").unwrap().len(), 1);
        for bad in [
            "",
            "{}",
            "{job=\"\"}",
            "up{job}",
            "up{job=\"x\"",
            "up extra",
        ] {
            assert!(parse_selector(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn bad_regex_is_a_clear_error() {
        let e = Matcher::new(MatchOp::Regex, "job", "(").unwrap_err();
        assert!(e.to_string().contains("matcher job"), "{e}");
    }
}
