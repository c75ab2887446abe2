//! TLS and mutual TLS on the xDS port, and node authorization: with mTLS, a node may only
//! claim an id that its client certificate names.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tonic::transport::{Certificate, Identity, ServerTlsConfig};
use tonic::Status;
use x509_parser::extensions::GeneralName;

/// Where the server's certificate, key and (for mTLS) client CA are.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsSettings {
    /// The server certificate chain (PEM).
    pub cert: PathBuf,
    /// Its private key (PEM).
    pub key: PathBuf,
    /// CA bundle (PEM) that client certificates must chain to: set it for mutual TLS, and
    /// clients without a valid certificate are refused at the handshake.
    pub client_ca: Option<PathBuf>,
    /// With mutual TLS: a node's id must be one of the names in its certificate (DNS or URI
    /// SANs, or the CN); a name ending in `*` allows every id with that prefix.
    #[serde(default)]
    pub authorize_node_ids: bool,
}

/// Why TLS could not be set up: which file, and the error that refused it.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A certificate, key or CA file cannot be read.
    #[error("TLS: cannot read {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The server certificate chain is not PEM.
    #[error("TLS: {}: {source}", path.display())]
    Certificate {
        /// The certificate file.
        path: PathBuf,
        /// The PEM error.
        #[source]
        source: rustls_pki_types::pem::Error,
    },
    /// The private key is not PEM.
    #[error("TLS: {}: {source}", path.display())]
    Key {
        /// The key file.
        path: PathBuf,
        /// The PEM error.
        #[source]
        source: rustls_pki_types::pem::Error,
    },
    /// rustls refuses the certificate chain with its key (a key that does not match, an
    /// unsupported key type).
    #[error("TLS: {}: {source}", path.display())]
    Identity {
        /// The certificate file.
        path: PathBuf,
        /// rustls' error.
        #[source]
        source: tokio_rustls::rustls::Error,
    },
    /// The client CA bundle is not PEM.
    #[error("TLS: client CA: {source}")]
    ClientCaPem {
        /// The CA bundle.
        path: PathBuf,
        /// The PEM error.
        #[source]
        source: rustls_pki_types::pem::Error,
    },
    /// A certificate of the client CA bundle cannot be a trust anchor.
    #[error("TLS: client CA: {source}")]
    ClientCaCertificate {
        /// The CA bundle.
        path: PathBuf,
        /// rustls' error.
        #[source]
        source: tokio_rustls::rustls::Error,
    },
    /// No client verifier can be built from the client CA bundle (for one, an empty bundle).
    #[error("TLS: client CA: {source}")]
    ClientCaVerifier {
        /// The CA bundle.
        path: PathBuf,
        /// rustls' error.
        #[source]
        source: tokio_rustls::rustls::server::VerifierBuilderError,
    },
    /// The crypto provider supports none of the default protocol versions.
    #[error("TLS: {0}")]
    Protocol(#[source] tokio_rustls::rustls::Error),
}

/// How long a TLS handshake may take before the connection is dropped: a client that opens a
/// connection and says nothing must not hold one of the admitted slots for ever.
pub(crate) const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The PEM files of [`TlsSettings`], read once: both TLS configs are built from the same bytes.
pub(crate) struct TlsFiles {
    cert: PemFile,
    key: PemFile,
    client_ca: Option<PemFile>,
}

/// One PEM file: where it is, for errors, and what it held when read.
struct PemFile {
    path: PathBuf,
    pem: Vec<u8>,
}

impl PemFile {
    fn read(path: &Path) -> Result<Self, TlsError> {
        match std::fs::read(path) {
            Ok(pem) => Ok(PemFile {
                path: path.to_path_buf(),
                pem,
            }),
            Err(source) => Err(TlsError::Read {
                path: path.to_path_buf(),
                source,
            }),
        }
    }
}

impl TlsSettings {
    /// Reads the files now, so that a bad path fails at start-up.
    pub(crate) fn read(&self) -> Result<TlsFiles, TlsError> {
        Ok(TlsFiles {
            cert: PemFile::read(&self.cert)?,
            key: PemFile::read(&self.key)?,
            client_ca: self.client_ca.as_deref().map(PemFile::read).transpose()?,
        })
    }

    /// Reads the files and builds the TLS configuration from them, as serving does: a missing
    /// file, a certificate or key that does not parse, or a key that does not match its
    /// certificate fails here, naming the file (`config check` runs this).
    pub fn check(&self) -> Result<(), TlsError> {
        self.read()?.refusal_config().map(|_| ())
    }
}

impl TlsFiles {
    /// The tonic TLS config.
    pub(crate) fn server_config(&self) -> ServerTlsConfig {
        let mut config = ServerTlsConfig::new()
            .identity(Identity::from_pem(&self.cert.pem, &self.key.pem))
            .timeout(HANDSHAKE_TIMEOUT);
        if let Some(ca) = &self.client_ca {
            config = config.client_ca_root(Certificate::from_pem(&ca.pem));
        }
        config
    }

    /// A rustls config like tonic's (the server's certificate, the same client verification
    /// for mutual TLS, HTTP/2): the handshake a client over the connection limit completes
    /// before it is answered with a gRPC status. With mutual TLS a client without a valid
    /// certificate is refused at the handshake here too.
    pub(crate) fn refusal_config(
        &self,
    ) -> Result<Arc<tokio_rustls::rustls::ServerConfig>, TlsError> {
        use rustls_pki_types::pem::PemObject;
        use rustls_pki_types::{CertificateDer, PrivateKeyDer};
        use tokio_rustls::rustls::server::WebPkiClientVerifier;
        use tokio_rustls::rustls::{RootCertStore, ServerConfig};
        let certs = CertificateDer::pem_slice_iter(&self.cert.pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|source| TlsError::Certificate {
                path: self.cert.path.clone(),
                source,
            })?;
        let key = PrivateKeyDer::from_pem_slice(&self.key.pem).map_err(|source| TlsError::Key {
            path: self.key.path.clone(),
            source,
        })?;
        let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
        let builder = ServerConfig::builder_with_provider(Arc::clone(&provider))
            .with_safe_default_protocol_versions()
            .map_err(TlsError::Protocol)?;
        let builder = match &self.client_ca {
            None => builder.with_no_client_auth(),
            Some(ca) => {
                let mut roots = RootCertStore::empty();
                for c in CertificateDer::pem_slice_iter(&ca.pem) {
                    let c = c.map_err(|source| TlsError::ClientCaPem {
                        path: ca.path.clone(),
                        source,
                    })?;
                    roots
                        .add(c)
                        .map_err(|source| TlsError::ClientCaCertificate {
                            path: ca.path.clone(),
                            source,
                        })?;
                }
                let verifier =
                    WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                        .build()
                        .map_err(|source| TlsError::ClientCaVerifier {
                            path: ca.path.clone(),
                            source,
                        })?;
                builder.with_client_cert_verifier(verifier)
            }
        };
        let mut config =
            builder
                .with_single_cert(certs, key)
                .map_err(|source| TlsError::Identity {
                    path: self.cert.path.clone(),
                    source,
                })?;
        config.alpn_protocols = vec![b"h2".to_vec()];
        Ok(Arc::new(config))
    }
}

/// The names a client certificate (DER) vouches for: DNS and URI SANs, and the CN.
pub(crate) fn certificate_names(der: &[u8]) -> Vec<String> {
    let Ok((_, cert)) = x509_parser::parse_x509_certificate(der) else {
        return Vec::new();
    };
    let mut names: Vec<String> = cert
        .subject()
        .iter_common_name()
        .filter_map(|cn| cn.as_str().ok().map(str::to_owned))
        .collect();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for name in &san.value.general_names {
            match name {
                GeneralName::DNSName(d) => names.push((*d).to_owned()),
                GeneralName::URI(u) => names.push((*u).to_owned()),
                _ => {}
            }
        }
    }
    names
}

impl PeerIdentity {
    /// Who the peer of `req` is: the names of its client certificate when node ids must match
    /// them (mutual TLS with `authorize_node_ids`), else unchecked.
    pub(crate) fn of<T>(tls: Option<&TlsSettings>, req: &tonic::Request<T>) -> Self {
        match tls {
            Some(tls) if tls.authorizes_node_ids() => {
                let names = req
                    .peer_certs()
                    .and_then(|certs| certs.first().map(|c| certificate_names(c.as_ref())))
                    .unwrap_or_default();
                PeerIdentity::Names(Arc::new(names))
            }
            _ => PeerIdentity::Unchecked,
        }
    }
}

impl TlsSettings {
    /// Whether every client proves, with a certificate, which node ids it may act for.
    pub(crate) fn authorizes_node_ids(&self) -> bool {
        self.authorize_node_ids && self.client_ca.is_some()
    }
}

/// Who the peer of a stream is, as far as node authorization goes.
#[derive(Debug, Clone, Default)]
pub(crate) enum PeerIdentity {
    /// Authorization is off (no mTLS, or not configured).
    #[default]
    Unchecked,
    /// The names of the peer's certificate.
    Names(Arc<Vec<String>>),
}

impl PeerIdentity {
    /// Refuses a node id the certificate does not name.
    pub(crate) fn authorize(&self, node_id: &str) -> Result<(), Status> {
        let PeerIdentity::Names(names) = self else {
            return Ok(());
        };
        let allowed = names.iter().any(|n| match n.strip_suffix('*') {
            Some(prefix) => node_id.starts_with(prefix),
            None => n == node_id,
        });
        if allowed {
            Ok(())
        } else {
            Err(Status::permission_denied(format!(
                "node id {node_id:?} is not one the client certificate allows ({})",
                names.join(", ")
            )))
        }
    }
}

#[cfg(test)]
mod tests {
    use std::error::Error as _;

    use super::*;

    #[test]
    fn tls_errors_keep_the_io_or_pem_error_as_source_and_read_as_before() {
        let missing = std::env::temp_dir().join("nebucloud-xds-no-such-dir/cert.pem");
        let settings = TlsSettings {
            cert: missing.clone(),
            key: missing.clone(),
            client_ca: None,
            authorize_node_ids: false,
        };
        let Err(err) = settings.read() else {
            panic!("{} must not be readable", missing.display())
        };
        let io = std::fs::read(&missing).unwrap_err();
        // What `TlsError(format!("cannot read {}: {e}", p.display()))` displayed.
        assert_eq!(
            err.to_string(),
            format!("TLS: cannot read {}: {io}", missing.display())
        );
        let source = err
            .source()
            .and_then(|s| s.downcast_ref::<std::io::Error>());
        assert_eq!(
            source.map(std::io::Error::kind),
            Some(std::io::ErrorKind::NotFound)
        );
        assert!(matches!(&err, TlsError::Read { path, .. } if *path == missing));

        let pem = |path: &str, pem: &[u8]| PemFile {
            path: PathBuf::from(path),
            pem: pem.to_vec(),
        };
        let files = TlsFiles {
            cert: pem("/etc/xds/cert.pem", b""),
            key: pem("/etc/xds/key.pem", b"not a key"),
            client_ca: None,
        };
        let Err(err) = files.refusal_config() else {
            panic!("a key that is not PEM must be refused")
        };
        // What `TlsError(format!("{key_name}: {e}"))` displayed.
        assert_eq!(err.to_string(), "TLS: /etc/xds/key.pem: no items found");
        assert!(err
            .source()
            .is_some_and(|s| s.is::<rustls_pki_types::pem::Error>()));
    }

    #[test]
    fn ids_must_match_a_name_or_a_prefix() {
        let p = PeerIdentity::Names(Arc::new(vec!["envoy-1".into(), "edge-*".into()]));
        assert!(p.authorize("envoy-1").is_ok());
        assert!(p.authorize("edge-42").is_ok());
        let e = p.authorize("envoy-2").unwrap_err();
        assert_eq!(e.code(), tonic::Code::PermissionDenied);
        assert!(e.message().contains("envoy-2"));
        assert!(PeerIdentity::Unchecked.authorize("anything").is_ok());
    }
}
