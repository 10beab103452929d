//! TLS settings of an endpoint: PEM files read and checked at startup and
//! turned into a `rustls::ServerConfig` (ring provider, TLS 1.2 and 1.3,
//! ALPN), optionally requiring client certificates signed by a given root
//! (mutual TLS). The loops drive the resulting sans-IO
//! `rustls::ServerConnection`s themselves (see [`super::event_loop`]).

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::RootCertStore;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;

/// Where an endpoint's certificate and key are, and whether clients must
/// present certificates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsConfig {
    /// PEM file with the server's certificate chain, leaf first.
    pub cert: PathBuf,
    /// PEM file with the server's private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// PEM file with the root certificates client certificates must chain
    /// to. `Some` turns on mutual TLS: a client without a valid
    /// certificate is refused during the handshake.
    pub client_ca: Option<PathBuf>,
}

/// A TLS setting that cannot be used; says which file and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsError(String);

impl fmt::Display for TlsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for TlsError {}

impl From<TlsError> for std::io::Error {
    fn from(e: TlsError) -> std::io::Error {
        std::io::Error::new(std::io::ErrorKind::InvalidInput, e.0)
    }
}

impl TlsConfig {
    /// Reads the files and builds the rustls configuration, offering the
    /// ALPN protocols in `alpn` (in order of preference).
    pub fn server_config(&self, alpn: &[&[u8]]) -> Result<Arc<rustls::ServerConfig>, TlsError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let certs = read_certs(&self.cert, "server certificate")?;
        let key_pem = read(&self.key, "server private key")?;
        let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| {
            TlsError(format!(
                "server private key '{}' holds no usable PEM private key: {e}",
                self.key.display()
            ))
        })?;
        let builder = rustls::ServerConfig::builder_with_provider(Arc::clone(&provider))
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError(format!("TLS protocol versions: {e}")))?;
        let builder = match &self.client_ca {
            None => builder.with_no_client_auth(),
            Some(path) => {
                let mut roots = RootCertStore::empty();
                for cert in read_certs(path, "root certificate")? {
                    roots.add(cert).map_err(|e| {
                        TlsError(format!(
                            "root certificate '{}' cannot be used: {e}",
                            path.display()
                        ))
                    })?;
                }
                let verifier =
                    WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                        .build()
                        .map_err(|e| {
                            TlsError(format!(
                                "root certificate '{}' cannot verify clients: {e}",
                                path.display()
                            ))
                        })?;
                builder.with_client_cert_verifier(verifier)
            }
        };
        let mut config = builder.with_single_cert(certs, key).map_err(|e| {
            TlsError(format!(
                "server certificate '{}' and key '{}' do not make a usable pair: {e}",
                self.cert.display(),
                self.key.display()
            ))
        })?;
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Ok(Arc::new(config))
    }
}

fn read(path: &Path, what: &str) -> Result<Vec<u8>, TlsError> {
    if path.as_os_str().is_empty() {
        return Err(TlsError(format!("no {what} file given")));
    }
    std::fs::read(path)
        .map_err(|e| TlsError(format!("cannot read {what} '{}': {e}", path.display())))
}

fn read_certs(path: &Path, what: &str) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = read(path, what)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError(format!("{what} '{}' is not valid PEM: {e}", path.display())))?;
    if certs.is_empty() {
        return Err(TlsError(format!(
            "{what} '{}' holds no PEM certificate",
            path.display()
        )));
    }
    Ok(certs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_files_are_named() {
        let config = TlsConfig {
            cert: PathBuf::from("/nonexistent/server.crt"),
            key: PathBuf::from("/nonexistent/server.key"),
            client_ca: None,
        };
        let err = config.server_config(&[b"h2"]).unwrap_err().to_string();
        assert!(
            err.contains("server certificate") && err.contains("/nonexistent/server.crt"),
            "{err}"
        );
        let config = TlsConfig {
            cert: PathBuf::new(),
            ..config
        };
        let err = config.server_config(&[b"h2"]).unwrap_err().to_string();
        assert!(err.contains("no server certificate file"), "{err}");
    }

    #[test]
    fn garbage_is_not_a_certificate() {
        let dir = std::env::temp_dir().join(format!("nereid-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let cert = dir.join("garbage.pem");
        std::fs::write(&cert, b"not a certificate\n").unwrap();
        let config = TlsConfig {
            cert: cert.clone(),
            key: cert,
            client_ca: None,
        };
        let err = config.server_config(&[b"h2"]).unwrap_err().to_string();
        assert!(err.contains("holds no PEM certificate"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
