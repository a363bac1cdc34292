//! TLS for every HTTP client strata runs (scrapes, HTTP discovery, remote-write), configured
//! as Prometheus's `tls_config` section (`common/config/http_config.go`).
//!
//! | field | meaning |
//! |---|---|
//! | `ca`, `ca_file` | PEM CA certificates; when given, the only roots trusted (otherwise the system's) |
//! | `cert` + `key`, `cert_file` + `key_file` | PEM client certificate and key (mutual TLS) |
//! | `server_name` | the name the server's certificate is verified against instead of the URL's host |
//! | `insecure_skip_verify` | accept any server certificate (handshake signatures are still checked) |
//! | `min_version`, `max_version` | `TLS12` or `TLS13`; the default minimum is TLS 1.2, as in Prometheus |
//!
//! Differences from Prometheus, each refused or documented rather than silently ignored:
//! TLS 1.0 and 1.1 are not offered (rustls implements 1.2 and 1.3 only), so `min_version`
//! `TLS10`/`TLS11` is an error; `server_name` changes the verified name but the SNI sent is
//! still the URL's host. Files are read when the client is built (at start and on reload).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use serde::Deserialize;

/// Prometheus's `tls_config`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    pub ca: Option<String>,
    pub ca_file: Option<PathBuf>,
    pub cert: Option<String>,
    pub cert_file: Option<PathBuf>,
    pub key: Option<String>,
    pub key_file: Option<PathBuf>,
    pub server_name: Option<String>,
    #[serde(default)]
    pub insecure_skip_verify: bool,
    pub min_version: Option<String>,
    pub max_version: Option<String>,
}

/// An HTTP client builder with `tls` applied (none: reqwest's defaults, the system's roots).
pub fn client_builder(tls: Option<&TlsConfig>) -> Result<reqwest::ClientBuilder, String> {
    let builder = reqwest::Client::builder();
    match tls {
        None => Ok(builder),
        Some(t) => Ok(builder.tls_backend_preconfigured(t.client_config()?)),
    }
}

/// PEM text given inline or by file; `what` names the field pair in errors.
fn pem(
    inline: Option<&String>,
    file: Option<&PathBuf>,
    what: &str,
) -> Result<Option<Vec<u8>>, String> {
    match (inline, file) {
        (Some(_), Some(_)) => Err(format!(
            "tls_config: at most one of {what} and {what}_file may be configured"
        )),
        (Some(text), None) => Ok(Some(text.clone().into_bytes())),
        (None, Some(path)) => read(path, what).map(Some),
        (None, None) => Ok(None),
    }
}

fn read(path: &Path, what: &str) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| {
        format!(
            "tls_config: cannot read {what}_file {}: {e}",
            path.display()
        )
    })
}

fn version(name: &str, field: &str) -> Result<&'static rustls::SupportedProtocolVersion, String> {
    match name {
        "TLS12" => Ok(&rustls::version::TLS12),
        "TLS13" => Ok(&rustls::version::TLS13),
        "TLS10" | "TLS11" => Err(format!(
            "tls_config: {field} {name} is not supported: strata speaks TLS 1.2 and 1.3 only; use TLS12"
        )),
        other => Err(format!(
            "tls_config: unknown {field} {other:?}: use TLS12 or TLS13"
        )),
    }
}

impl TlsConfig {
    /// Checks the section without building anything that reads files.
    pub fn validate(&self) -> Result<(), String> {
        self.versions()?;
        if self.ca.is_some() && self.ca_file.is_some() {
            return Err("tls_config: at most one of ca and ca_file may be configured".into());
        }
        let cert = self.cert.is_some() || self.cert_file.is_some();
        let key = self.key.is_some() || self.key_file.is_some();
        if cert != key {
            return Err(
                "tls_config: a client certificate needs both cert (or cert_file) and key (or key_file)"
                    .into(),
            );
        }
        if let Some(name) = &self.server_name {
            ServerName::try_from(name.as_str())
                .map_err(|e| format!("tls_config: invalid server_name {name:?}: {e}"))?;
        }
        Ok(())
    }

    fn versions(&self) -> Result<Vec<&'static rustls::SupportedProtocolVersion>, String> {
        let min = version(
            self.min_version.as_deref().unwrap_or("TLS12"),
            "min_version",
        )?;
        let max = version(
            self.max_version.as_deref().unwrap_or("TLS13"),
            "max_version",
        )?;
        let all = [&rustls::version::TLS12, &rustls::version::TLS13];
        let rank =
            |v: &rustls::SupportedProtocolVersion| all.iter().position(|a| a.version == v.version);
        let versions: Vec<_> = all
            .into_iter()
            .filter(|v| rank(v) >= rank(min) && rank(v) <= rank(max))
            .collect();
        if versions.is_empty() {
            return Err(format!(
                "tls_config: max_version {} is lower than min_version {}",
                self.max_version.as_deref().unwrap_or("TLS13"),
                self.min_version.as_deref().unwrap_or("TLS12")
            ));
        }
        Ok(versions)
    }

    /// The rustls client configuration: roots, client certificate, verification, versions.
    pub fn client_config(&self) -> Result<rustls::ClientConfig, String> {
        self.validate()?;
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let algorithms = provider.signature_verification_algorithms;
        let base: Arc<dyn ServerCertVerifier> =
            match pem(self.ca.as_ref(), self.ca_file.as_ref(), "ca")? {
                Some(ca) => {
                    let mut roots = rustls::RootCertStore::empty();
                    for cert in CertificateDer::pem_slice_iter(&ca) {
                        let cert = cert.map_err(|e| format!("tls_config: ca is not PEM: {e}"))?;
                        roots
                            .add(cert)
                            .map_err(|e| format!("tls_config: bad CA certificate: {e}"))?;
                    }
                    if roots.is_empty() {
                        return Err("tls_config: ca holds no certificate".into());
                    }
                    rustls::client::WebPkiServerVerifier::builder_with_provider(
                        Arc::new(roots),
                        provider.clone(),
                    )
                    .build()
                    .map_err(|e| format!("tls_config: {e}"))?
                }
                None => Arc::new(
                    rustls_platform_verifier::Verifier::new(provider.clone())
                        .map_err(|e| format!("tls_config: cannot load the system's roots: {e}"))?,
                ),
            };
        let verifier = Verifier {
            inner: base,
            server_name: self
                .server_name
                .as_ref()
                .map(|n| ServerName::try_from(n.clone()))
                .transpose()
                .map_err(|e| format!("tls_config: invalid server_name: {e}"))?,
            insecure: self.insecure_skip_verify,
            algorithms,
        };
        let builder = rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&self.versions()?)
            .map_err(|e| format!("tls_config: {e}"))?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(verifier));
        let cert = pem(self.cert.as_ref(), self.cert_file.as_ref(), "cert")?;
        let key = pem(self.key.as_ref(), self.key_file.as_ref(), "key")?;
        match (cert, key) {
            (Some(cert), Some(key)) => {
                let chain = CertificateDer::pem_slice_iter(&cert)
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|e| format!("tls_config: cert is not PEM: {e}"))?;
                let key = PrivateKeyDer::from_pem_slice(&key)
                    .map_err(|e| format!("tls_config: key is not a PEM private key: {e}"))?;
                builder.with_client_auth_cert(chain, key).map_err(|e| {
                    format!("tls_config: the client certificate and key do not fit: {e}")
                })
            }
            _ => Ok(builder.with_no_client_auth()),
        }
    }
}

/// Certificate verification with Prometheus's options on top of a base verifier.
#[derive(Debug)]
struct Verifier {
    inner: Arc<dyn ServerCertVerifier>,
    /// Verify against this name instead of the URL's host.
    server_name: Option<ServerName<'static>>,
    /// Accept any certificate.
    insecure: bool,
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for Verifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if self.insecure {
            return Ok(ServerCertVerified::assertion());
        }
        let name = self.server_name.as_ref().unwrap_or(server_name);
        self.inner
            .verify_server_cert(end_entity, intermediates, name, ocsp_response, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}
