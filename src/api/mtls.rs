//! Mutual TLS between sidecars: the internal listener asks every peer for
//! a certificate issued by the configured CA and refuses the handshake
//! without one, and this sidecar's calls to other sidecars (service
//! invocation and proxied gRPC) present its own certificate and accept
//! only servers whose certificate the same CA issued.
//!
//! Peers are identified by their CA, not by host name: name resolution
//! hands out addresses (often bare IPs) that certificates do not list, so
//! a server certificate is checked for its chain, validity and key usage
//! but not for the name dialled. The CA is the trust domain, as in Dapr.
//!
//! The files are polled (`reload_interval`); when their bytes change, the
//! new set is loaded and connections made after that use it. A set that
//! does not load (a half-written file) is logged and the old one kept.

use std::io;
use std::net::IpAddr;
use std::path::Path;
use std::pin::Pin;
use std::sync::{Arc, RwLock};
use std::task::{Context, Poll};

use http::Uri;
use hyper_util::rt::TokioIo;
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::{CertificateError, DigitallySignedStruct, RootCertStore, SignatureScheme};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::{TlsAcceptor, TlsConnector};
use tonic::transport::server::Connected;
use tracing::{info, warn};

use crate::config::MtlsConfig;

/// Why a certificate set could not be loaded; names the config field.
#[derive(Debug, thiserror::Error)]
pub enum MtlsError {
    #[error("server.mtls.{field}: cannot read {path}: {source}")]
    Read {
        field: &'static str,
        path: String,
        source: io::Error,
    },
    #[error("server.mtls.{field}: {path}: {reason}")]
    Invalid {
        field: &'static str,
        path: String,
        reason: String,
    },
}

/// The three files' bytes, to tell a change.
#[derive(PartialEq, Eq)]
struct Files {
    ca: Vec<u8>,
    cert: Vec<u8>,
    key: Vec<u8>,
}

impl Files {
    fn read(config: &MtlsConfig) -> Result<Files, MtlsError> {
        let read = |field: &'static str, path: &Path| {
            std::fs::read(path).map_err(|source| MtlsError::Read {
                field,
                path: path.display().to_string(),
                source,
            })
        };
        Ok(Files {
            ca: read("ca", &config.ca)?,
            cert: read("cert", &config.cert)?,
            key: read("key", &config.key)?,
        })
    }
}

/// The TLS settings of both directions, built from one set of files.
struct Loaded {
    files: Files,
    server: Arc<rustls::ServerConfig>,
    client: Arc<rustls::ClientConfig>,
}

fn load(config: &MtlsConfig, files: Files) -> Result<Loaded, MtlsError> {
    let invalid = |field: &'static str, path: &Path, reason: String| MtlsError::Invalid {
        field,
        path: path.display().to_string(),
        reason,
    };
    let mut roots = RootCertStore::empty();
    let mut cas = 0;
    for cert in CertificateDer::pem_slice_iter(&files.ca) {
        let cert = cert.map_err(|e| invalid("ca", &config.ca, format!("not PEM certificates: {e}")))?;
        roots
            .add(cert)
            .map_err(|e| invalid("ca", &config.ca, format!("not a usable CA certificate: {e}")))?;
        cas += 1;
    }
    if cas == 0 {
        return Err(invalid("ca", &config.ca, "holds no PEM certificate".into()));
    }
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&files.cert)
        .collect::<Result<_, _>>()
        .map_err(|e| invalid("cert", &config.cert, format!("not PEM certificates: {e}")))?;
    if chain.is_empty() {
        return Err(invalid("cert", &config.cert, "holds no PEM certificate".into()));
    }
    let key = PrivateKeyDer::from_pem_slice(&files.key)
        .map_err(|e| invalid("key", &config.key, format!("no PEM private key: {e}")))?;

    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let roots = Arc::new(roots);
    let client_verifier = WebPkiClientVerifier::builder_with_provider(roots.clone(), provider.clone())
        .build()
        .map_err(|e| invalid("ca", &config.ca, e.to_string()))?;
    let mut server = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| invalid("cert", &config.cert, e.to_string()))?
        .with_client_cert_verifier(client_verifier)
        .with_single_cert(chain.clone(), key.clone_key())
        .map_err(|e| invalid("key", &config.key, format!("does not match the certificate: {e}")))?;
    server.alpn_protocols = vec![b"h2".to_vec()];

    let server_verifier = WebPkiServerVerifier::builder_with_provider(roots, provider.clone())
        .build()
        .map_err(|e| invalid("ca", &config.ca, e.to_string()))?;
    let mut client = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| invalid("cert", &config.cert, e.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(SameCa(server_verifier)))
        .with_client_auth_cert(chain, key)
        .map_err(|e| invalid("key", &config.key, format!("does not match the certificate: {e}")))?;
    client.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Loaded {
        files,
        server: Arc::new(server),
        client: Arc::new(client),
    })
}

/// A server certificate is good when the CA issued it (chain, validity,
/// key usage), whatever names it lists: see the module doc.
#[derive(Debug)]
struct SameCa(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for SameCa {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
        {
            // webpki checks the name last, after the chain verified.
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

/// The live certificate set of this sidecar.
pub struct Mtls {
    config: MtlsConfig,
    loaded: RwLock<Loaded>,
}

impl Mtls {
    /// Loads the files; an error names the field and the file.
    pub fn load(config: &MtlsConfig) -> Result<Arc<Mtls>, MtlsError> {
        let loaded = load(config, Files::read(config)?)?;
        Ok(Arc::new(Mtls {
            config: config.clone(),
            loaded: RwLock::new(loaded),
        }))
    }

    /// Re-reads the files; true when they changed and the new set is in
    /// use. A set that does not load leaves the old one in place.
    pub fn reload(&self) -> Result<bool, MtlsError> {
        let files = Files::read(&self.config)?;
        if self.loaded.read().unwrap_or_else(|p| p.into_inner()).files == files {
            return Ok(false);
        }
        let loaded = load(&self.config, files)?;
        *self.loaded.write().unwrap_or_else(|p| p.into_inner()) = loaded;
        Ok(true)
    }

    /// Checks the files every `reload_interval` until dropped; `changed`
    /// runs after a new set is in use.
    pub async fn watch(self: Arc<Self>, changed: impl Fn() + Send + 'static) {
        let mut tick = tokio::time::interval(self.config.reload_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        let mut failing = false;
        loop {
            tick.tick().await;
            match self.reload() {
                Ok(true) => {
                    failing = false;
                    info!("mTLS certificates changed; new connections use them");
                    changed();
                }
                Ok(false) => failing = false,
                Err(e) => {
                    if !failing {
                        warn!(error = %e, "mTLS certificates did not reload; the previous ones stay in use");
                    }
                    failing = true;
                }
            }
        }
    }

    /// The acceptor for one incoming connection.
    pub fn acceptor(&self) -> TlsAcceptor {
        TlsAcceptor::from(self.loaded.read().unwrap_or_else(|p| p.into_inner()).server.clone())
    }

    fn connector(&self) -> TlsConnector {
        TlsConnector::from(self.loaded.read().unwrap_or_else(|p| p.into_inner()).client.clone())
    }
}

/// tonic's connector for calls to other sidecars over mTLS: TCP, then
/// the TLS handshake with the certificate set current at connect time.
#[derive(Clone)]
pub struct MtlsConnector(pub Arc<Mtls>);

impl tower::Service<Uri> for MtlsConnector {
    type Response = TokioIo<tokio_rustls::client::TlsStream<TcpStream>>;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, io::Error>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), io::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let connector = self.0.connector();
        Box::pin(async move {
            let host = uri
                .host()
                .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, format!("no host in {uri}")))?;
            let host = host.trim_start_matches('[').trim_end_matches(']').to_owned();
            let port = uri.port_u16().unwrap_or(443);
            let tcp = TcpStream::connect((host.as_str(), port)).await?;
            tcp.set_nodelay(true)?;
            let name = match host.parse::<IpAddr>() {
                Ok(ip) => ServerName::IpAddress(ip.into()),
                Err(_) => ServerName::try_from(host.clone())
                    .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, format!("{host}: {e}")))?,
            };
            let tls = connector.connect(name, tcp).await?;
            Ok(TokioIo::new(tls))
        })
    }
}

/// An accepted connection after its TLS handshake, handing tonic the
/// plain connection's info.
pub struct TlsConn<IO>(pub tokio_rustls::server::TlsStream<IO>);

impl<IO: Connected + AsyncRead + AsyncWrite + Unpin> Connected for TlsConn<IO> {
    type ConnectInfo = IO::ConnectInfo;

    fn connect_info(&self) -> IO::ConnectInfo {
        self.0.get_ref().0.connect_info()
    }
}

impl<IO: AsyncRead + AsyncWrite + Unpin> AsyncRead for TlsConn<IO> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl<IO: AsyncRead + AsyncWrite + Unpin> AsyncWrite for TlsConn<IO> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.0.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn config(dir: &Path) -> MtlsConfig {
        MtlsConfig {
            ca: dir.join("ca.pem"),
            cert: dir.join("cert.pem"),
            key: dir.join("key.pem"),
            reload_interval: Duration::from_secs(1),
        }
    }

    #[test]
    fn a_bad_file_is_named_by_its_field() {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = config(dir.path());
        let missing = Mtls::load(&config).err().expect("no files").to_string();
        assert!(missing.starts_with("server.mtls.ca: cannot read"), "{missing}");

        std::fs::write(&config.ca, "not a certificate").expect("write");
        std::fs::write(&config.cert, "").expect("write");
        std::fs::write(&config.key, "").expect("write");
        let empty = Mtls::load(&config).err().expect("no certificates").to_string();
        assert!(
            empty.starts_with("server.mtls.ca:") && empty.ends_with("holds no PEM certificate"),
            "{empty}"
        );
    }
}
