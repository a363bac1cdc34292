//! Who may write what: bearer tokens mapped to senders, and the labels each sender's series
//! must carry (enforced) or get (stamped).
//!
//! Tokens are never kept or compared as they are: each configured token and each presented
//! one is hashed with a key drawn at start (xxh3-128), and the presented digest is compared
//! with every sender's digest, in full and without an early exit, so the time a request
//! takes says nothing about how much of a token was right or which sender it was close to.
//! Tokens never appear in logs, metrics or errors; senders are named by their `name`.

use axum::http::HeaderMap;
use axum::http::header::AUTHORIZATION;
use strata_relay::remote_write::read_secret;
use strata_wire::Label;
use strata_wire::labels::LabelPair;
use xxhash_rust::xxh3::xxh3_128_with_seed;

use crate::config::{AuthConfig, LabelAction};
use crate::{Error, Result};

/// One configured sender.
#[derive(Debug)]
pub struct Sender {
    pub name: String,
    /// Sorted by name.
    pub labels: Vec<Label>,
    pub action: LabelAction,
    digest: [u8; 16],
}

/// The senders of the running configuration.
#[derive(Debug)]
pub struct Auth {
    seed: u64,
    senders: Vec<Sender>,
}

/// A sender's `token_file`, read as Prometheus reads secret files; an empty one is refused.
fn read_token(path: &std::path::Path) -> Result<String> {
    let token = read_secret(path).map_err(Error::Config)?;
    if token.is_empty() {
        return Err(Error::Config(format!(
            "token file {} is empty",
            path.display()
        )));
    }
    Ok(token)
}

impl Auth {
    /// Builds the senders, reading token files now.
    pub fn new(config: &AuthConfig) -> Result<Self> {
        let seed = rand::random();
        let mut senders = Vec::with_capacity(config.tokens.len());
        for t in &config.tokens {
            let token = match (&t.token, &t.token_file) {
                (Some(tok), _) => tok.trim().to_string(),
                (None, Some(file)) => read_token(file)?,
                (None, None) => {
                    return Err(Error::Config(format!("token {:?} has no token", t.name)));
                }
            };
            senders.push(Sender {
                name: t.name.clone(),
                labels: t
                    .labels
                    .iter()
                    .map(|(n, v)| Label::new(n.clone(), v.clone()))
                    .collect(),
                action: t.action,
                digest: digest(seed, token.as_bytes()),
            });
        }
        for (i, a) in senders.iter().enumerate() {
            if senders[..i].iter().any(|b| b.digest == a.digest) {
                return Err(Error::Config(format!(
                    "senders {:?} and another have the same token; give each sender its own",
                    a.name
                )));
            }
        }
        Ok(Self { seed, senders })
    }

    /// True when tokens are configured (every write must then present one).
    pub fn enabled(&self) -> bool {
        !self.senders.is_empty()
    }

    /// The sender of a request: `None` when auth is off; 401 without a valid bearer token.
    pub fn authenticate(&self, headers: &HeaderMap) -> Result<Option<&Sender>> {
        if !self.enabled() {
            return Ok(None);
        }
        let value = headers
            .get(AUTHORIZATION)
            .ok_or(Error::Unauthorized(
                "no bearer token: send `Authorization: Bearer <token>` (Prometheus: remote_write authorization.credentials_file)",
            ))?
            .as_bytes();
        let token = value
            .get(..7)
            .filter(|scheme| scheme.eq_ignore_ascii_case(b"bearer "))
            .map(|_| value[7..].trim_ascii())
            .ok_or(Error::Unauthorized(
                "the Authorization header is not a bearer token: send `Authorization: Bearer <token>`",
            ))?;
        let presented = digest(self.seed, token);
        let mut found = None;
        for s in &self.senders {
            if constant_time_eq(&presented, &s.digest) {
                found = Some(s);
            }
        }
        found
            .map(Some)
            .ok_or(Error::Unauthorized("the bearer token is not valid"))
    }
}

fn digest(seed: u64, token: &[u8]) -> [u8; 16] {
    xxh3_128_with_seed(token, seed).to_le_bytes()
}

/// Compares all 16 bytes whatever they hold.
fn constant_time_eq(a: &[u8; 16], b: &[u8; 16]) -> bool {
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

impl Sender {
    /// The first of the sender's labels that `labels` (sorted) lacks or carries with another
    /// value: (name, required value, value found).
    pub fn violation<'a, L: LabelPair>(
        &'a self,
        labels: &'a [L],
    ) -> Option<(&'a str, &'a str, Option<&'a str>)> {
        self.labels.iter().find_map(|want| {
            let found = labels
                .binary_search_by(|l| l.name().cmp(&want.name))
                .ok()
                .map(|i| labels[i].value());
            (found != Some(want.value.as_str())).then_some((
                want.name.as_str(),
                want.value.as_str(),
                found,
            ))
        })
    }

    /// Sets the sender's labels on a sorted label set, keeping it sorted.
    pub fn stamp(&self, labels: &mut Vec<Label>) {
        for want in &self.labels {
            match labels.binary_search_by(|l| l.name.as_str().cmp(&want.name)) {
                Ok(i) => labels[i].value.clone_from(&want.value),
                Err(i) => labels.insert(i, want.clone()),
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::config::TokenConfig;
    use axum::http::HeaderValue;

    fn auth() -> Auth {
        Auth::new(&AuthConfig {
            tokens: vec![
                TokenConfig {
                    name: "hz-07".into(),
                    token: Some("secret-07".into()),
                    labels: [("cell".to_string(), "hz-07".to_string())].into(),
                    ..Default::default()
                },
                TokenConfig {
                    name: "hz-08".into(),
                    token: Some("secret-08".into()),
                    action: LabelAction::Stamp,
                    labels: [
                        ("cell".to_string(), "hz-08".to_string()),
                        ("region".to_string(), "cn-hangzhou".to_string()),
                    ]
                    .into(),
                    ..Default::default()
                },
            ],
        })
        .unwrap()
    }

    fn headers(value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(AUTHORIZATION, HeaderValue::from_str(value).unwrap());
        h
    }

    #[test]
    fn tokens_map_to_senders() {
        let a = auth();
        let s = a
            .authenticate(&headers("Bearer secret-08"))
            .unwrap()
            .unwrap();
        assert_eq!(s.name, "hz-08");
        let s = a
            .authenticate(&headers("bearer  secret-07 "))
            .unwrap()
            .unwrap();
        assert_eq!(s.name, "hz-07");
        for bad in [
            "Bearer secret-0",
            "Bearer secret-077",
            "Basic c2VjcmV0LTA3",
            "Bearer",
        ] {
            assert!(matches!(
                a.authenticate(&headers(bad)),
                Err(Error::Unauthorized(_))
            ));
        }
        assert!(matches!(
            a.authenticate(&HeaderMap::new()),
            Err(Error::Unauthorized(_))
        ));
        let off = Auth::new(&AuthConfig::default()).unwrap();
        assert!(off.authenticate(&HeaderMap::new()).unwrap().is_none());
    }

    #[test]
    fn violations_and_stamps() {
        let a = auth();
        let s7 = &a.senders[0];
        let ok = [Label::new("__name__", "up"), Label::new("cell", "hz-07")];
        assert_eq!(s7.violation(&ok), None);
        let other = [Label::new("__name__", "up"), Label::new("cell", "hz-09")];
        assert_eq!(s7.violation(&other), Some(("cell", "hz-07", Some("hz-09"))));
        let missing = [Label::new("__name__", "up")];
        assert_eq!(s7.violation(&missing), Some(("cell", "hz-07", None)));
        let s8 = &a.senders[1];
        let mut labels = vec![
            Label::new("__name__", "up"),
            Label::new("cell", "x"),
            Label::new("job", "node"),
        ];
        s8.stamp(&mut labels);
        let names: Vec<_> = labels
            .iter()
            .map(|l| format!("{}={}", l.name, l.value))
            .collect();
        assert_eq!(
            names,
            [
                "__name__=up",
                "cell=hz-08",
                "job=node",
                "region=cn-hangzhou"
            ]
        );
    }

    #[test]
    fn duplicate_tokens_and_token_files() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("t");
        std::fs::write(&file, "  from-file\n").unwrap();
        let a = Auth::new(&AuthConfig {
            tokens: vec![TokenConfig {
                name: "f".into(),
                token_file: Some(file.clone()),
                ..Default::default()
            }],
        })
        .unwrap();
        assert!(
            a.authenticate(&headers("Bearer from-file"))
                .unwrap()
                .is_some()
        );
        let same = AuthConfig {
            tokens: vec![
                TokenConfig {
                    name: "a".into(),
                    token: Some("from-file".into()),
                    ..Default::default()
                },
                TokenConfig {
                    name: "b".into(),
                    token_file: Some(file),
                    ..Default::default()
                },
            ],
        };
        assert!(Auth::new(&same).is_err());
    }
}
