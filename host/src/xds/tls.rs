//! TLS and mutual TLS on the xDS port, and node authorization: with mTLS, a node may only
//! claim an id that its client certificate names.

use std::path::PathBuf;
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

/// Why TLS could not be set up.
#[derive(Debug, thiserror::Error)]
#[error("TLS: {0}")]
pub struct TlsError(String);

/// How long a TLS handshake may take before the connection is dropped: a client that opens a
/// connection and says nothing must not hold one of the admitted slots for ever.
pub(crate) const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The PEM files of [`TlsSettings`], read once: both TLS configs are built from the same bytes.
pub(crate) struct TlsFiles {
    cert: Vec<u8>,
    key: Vec<u8>,
    client_ca: Option<Vec<u8>>,
    names: (String, String),
}

impl TlsSettings {
    /// Reads the files now, so that a bad path fails at start-up.
    pub(crate) fn read(&self) -> Result<TlsFiles, TlsError> {
        let read = |p: &PathBuf| {
            std::fs::read(p).map_err(|e| TlsError(format!("cannot read {}: {e}", p.display())))
        };
        Ok(TlsFiles {
            cert: read(&self.cert)?,
            key: read(&self.key)?,
            client_ca: self.client_ca.as_ref().map(read).transpose()?,
            names: (
                self.cert.display().to_string(),
                self.key.display().to_string(),
            ),
        })
    }
}

impl TlsFiles {
    /// The tonic TLS config.
    pub(crate) fn server_config(&self) -> ServerTlsConfig {
        let mut config = ServerTlsConfig::new()
            .identity(Identity::from_pem(&self.cert, &self.key))
            .timeout(HANDSHAKE_TIMEOUT);
        if let Some(ca) = &self.client_ca {
            config = config.client_ca_root(Certificate::from_pem(ca));
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
        let (cert_name, key_name) = &self.names;
        let certs = CertificateDer::pem_slice_iter(&self.cert)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| TlsError(format!("{cert_name}: {e}")))?;
        let key = PrivateKeyDer::from_pem_slice(&self.key)
            .map_err(|e| TlsError(format!("{key_name}: {e}")))?;
        let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
        let builder = ServerConfig::builder_with_provider(Arc::clone(&provider))
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError(e.to_string()))?;
        let builder = match &self.client_ca {
            None => builder.with_no_client_auth(),
            Some(ca) => {
                let mut roots = RootCertStore::empty();
                for c in CertificateDer::pem_slice_iter(ca) {
                    let c = c.map_err(|e| TlsError(format!("client CA: {e}")))?;
                    roots
                        .add(c)
                        .map_err(|e| TlsError(format!("client CA: {e}")))?;
                }
                let verifier =
                    WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                        .build()
                        .map_err(|e| TlsError(format!("client CA: {e}")))?;
                builder.with_client_cert_verifier(verifier)
            }
        };
        let mut config = builder
            .with_single_cert(certs, key)
            .map_err(|e| TlsError(format!("{cert_name}: {e}")))?;
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
    use super::*;

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
