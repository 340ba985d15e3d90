//! The rustls side of `sslmode`: which certificate checks each mode makes.
//!
//! - `prefer` and `require` (without a CA): encrypted, the certificate not checked (as
//!   libpq). The handshake's signatures are still verified, so the peer holds the key of
//!   the certificate it sent.
//! - `verify-ca`: the chain must lead to a trusted root; the host name is not checked.
//! - `verify-full`: the chain and the host name.

use std::path::Path;
use std::sync::Arc;

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
};
use tokio_postgres_rustls::MakeRustlsConnect;

use super::config::{DatabaseConfigError, RootCerts, SslMode};

/// The connector for `mode`, trusting `roots` when the mode checks certificates.
pub(super) fn connector(
    mode: SslMode,
    roots: &RootCerts,
) -> Result<MakeRustlsConnect, DatabaseConfigError> {
    if !mode.verifies_certificate() {
        return Ok(unverified());
    }
    let provider = provider();
    let webpki = WebPkiServerVerifier::builder_with_provider(
        Arc::new(root_store(roots)?),
        Arc::clone(&provider),
    )
    .build()
    .map_err(|e| DatabaseConfigError::Roots {
        roots: roots.to_string(),
        reason: e.to_string(),
    })?;
    Ok(with_verifier(
        provider,
        Arc::new(Verified {
            webpki,
            check_name: mode == SslMode::VerifyFull,
            roots: roots.to_string(),
        }),
    ))
}

/// The connector of the modes that check no certificate.
pub(super) fn unverified() -> MakeRustlsConnect {
    let provider = provider();
    let verifier = Arc::new(Unverified {
        algorithms: provider.signature_verification_algorithms,
    });
    with_verifier(provider, verifier)
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

fn with_verifier(
    provider: Arc<CryptoProvider>,
    verifier: Arc<dyn ServerCertVerifier>,
) -> MakeRustlsConnect {
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("aws-lc-rs supports TLS 1.2 and 1.3")
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    MakeRustlsConnect::new(config)
}

fn root_store(roots: &RootCerts) -> Result<RootCertStore, DatabaseConfigError> {
    let fail = |reason: String| DatabaseConfigError::Roots {
        roots: roots.to_string(),
        reason,
    };
    let certificates = match roots {
        RootCerts::System => {
            let found = rustls_native_certs::load_native_certs();
            if found.certs.is_empty() {
                let errors: Vec<String> = found.errors.iter().map(ToString::to_string).collect();
                return Err(fail(format!(
                    "no trusted certificates found ({})",
                    errors.join("; ")
                )));
            }
            found.certs
        }
        RootCerts::File(path) => read_pem(path).map_err(fail)?,
    };
    let mut store = RootCertStore::empty();
    let (added, _ignored) = store.add_parsable_certificates(certificates);
    if added == 0 {
        return Err(fail(
            "none of its certificates is usable as a root".to_owned(),
        ));
    }
    Ok(store)
}

fn read_pem(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let certificates = CertificateDer::pem_file_iter(path)
        .map_err(|e| e.to_string())?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| e.to_string())?;
    if certificates.is_empty() {
        return Err("holds no PEM certificate".to_owned());
    }
    Ok(certificates)
}

/// `prefer` and `require`: any certificate, as long as the peer proves it holds its key.
#[derive(Debug)]
struct Unverified {
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for Unverified {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
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

/// `verify-ca` and `verify-full`: webpki's checks, the name's only for `verify-full`.
#[derive(Debug)]
struct Verified {
    webpki: Arc<WebPkiServerVerifier>,
    check_name: bool,
    /// Where the roots came from, for the error when the chain leads to none of them.
    roots: String,
}

/// The server's certificate chain leads to none of the trusted roots.
#[derive(Debug, thiserror::Error)]
#[error("the server's certificate is not signed by a trusted CA ({roots})")]
struct Untrusted {
    roots: String,
}

impl ServerCertVerifier for Verified {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self.webpki.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        ) {
            // webpki checks the chain first and the name last: a name error means the
            // chain was good, which is all `verify-ca` asks.
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) if !self.check_name => Ok(ServerCertVerified::assertion()),
            // rustls would say `UnknownIssuer`; say which roots were trusted.
            Err(rustls::Error::InvalidCertificate(
                CertificateError::UnknownIssuer | CertificateError::BadSignature,
            )) => Err(rustls::Error::Other(rustls::OtherError(Arc::new(
                Untrusted {
                    roots: self.roots.clone(),
                },
            )))),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.webpki.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.webpki.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.webpki.supported_verify_schemes()
    }
}
