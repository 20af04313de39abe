//! TLS for https:// receivers: whom the webhook client trusts, and what an operator reads in
//! `last_error` when a receiver's certificate is refused.
//!
//! Trust is the public web PKI (Mozilla's roots, compiled in through `webpki-roots`) plus the
//! certificates of `--webhook-ca-file`. Compiled-in roots rather than the host's store: octet
//! often runs in slim images with no CA bundle at all, and the same binary then trusts the
//! same receivers everywhere. There is deliberately no way to skip verification: a private
//! receiver's CA goes in `--webhook-ca-file`.

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use rustls::{CertificateError, RootCertStore};

/// The certificates in the PEM file at `path` (one or more), each checked to be usable as a
/// trust anchor. `Err` says what is wrong with the file, for a startup config error.
pub fn load_ca_file(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let shown = path.display();
    let bytes = std::fs::read(path).map_err(|err| format!("{shown} cannot be read: {err}"))?;
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|err| format!("{shown} is not a valid PEM file: {err}"))?;
    if certs.is_empty() {
        return Err(format!(
            "{shown} holds no certificate; give the receiver's CA certificate in PEM (-----BEGIN CERTIFICATE-----)"
        ));
    }
    let mut roots = RootCertStore::empty();
    for (n, cert) in certs.iter().enumerate() {
        roots.add(cert.clone()).map_err(|err| {
            format!(
                "{shown}: certificate {} of {} cannot be used as a CA: {err}",
                n + 1,
                certs.len()
            )
        })?;
    }
    Ok(certs)
}

/// The webhook client's TLS settings: the public roots plus `extra` (already checked by
/// [`load_ca_file`]), with aws-lc-rs named explicitly so nothing depends on a process-wide
/// provider.
pub(super) fn client_config(extra: &[CertificateDer<'static>]) -> rustls::ClientConfig {
    let mut roots = RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    let (_, ignored) = roots.add_parsable_certificates(extra.iter().cloned());
    if ignored > 0 {
        // Only a config built in code gets here: --webhook-ca-file is checked at startup.
        tracing::warn!(
            ignored,
            "webhook CA certificates that cannot be used as a CA were ignored"
        );
    }
    rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("aws-lc-rs supports the default TLS versions")
    .with_root_certificates(roots)
    .with_no_client_auth()
}

/// A TLS failure somewhere in `err`'s causes, said the way an operator acts on it; `None` when
/// the failure was not TLS (then the caller's own text applies).
pub(super) fn describe(err: &(dyn std::error::Error + 'static), host: &str) -> Option<String> {
    find(err).map(|tls| words(tls, host))
}

/// The rustls error among `err`'s causes. rustls reports through std::io::Error, often one
/// inside another, and an io::Error's source() skips the error it wraps: look inside each.
fn find<'e>(err: &'e (dyn std::error::Error + 'static)) -> Option<&'e rustls::Error> {
    if let Some(tls) = err.downcast_ref::<rustls::Error>() {
        return Some(tls);
    }
    let wrapped = err
        .downcast_ref::<std::io::Error>()
        .and_then(|io| io.get_ref());
    if let Some(tls) = wrapped.and_then(|inner| find(inner)) {
        return Some(tls);
    }
    err.source().and_then(find)
}

fn words(err: &rustls::Error, host: &str) -> String {
    let rustls::Error::InvalidCertificate(cert) = err else {
        return format!("TLS handshake with {host} failed: {err}");
    };
    match cert {
        CertificateError::UnknownIssuer => format!(
            "certificate not trusted: {host}'s certificate is not issued by a public CA nor by one in --webhook-ca-file (add the CA with --webhook-ca-file)"
        ),
        CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. } => {
            format!(
                "certificate not valid for {host}: the receiver's certificate does not name this host ({cert}); use a URL with a name the certificate lists"
            )
        }
        CertificateError::Expired | CertificateError::ExpiredContext { .. } => format!(
            "certificate expired: {host}'s certificate is past its end date ({cert}); renew it on the receiver"
        ),
        CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => format!(
            "certificate not valid yet: {host}'s certificate starts later ({cert}); check the receiver's certificate and both clocks"
        ),
        CertificateError::Revoked => format!("certificate revoked: {host}'s certificate"),
        other => format!("certificate rejected: {host}: {other}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_common_refusals_read_as_what_to_do() {
        let unknown = rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer);
        // Wrapped twice, the way hyper-rustls hands it to reqwest.
        let io = std::io::Error::other(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            unknown,
        ));
        let said = describe(&io, "hooks.example.com").expect("a TLS error");
        assert!(said.starts_with("certificate not trusted: hooks.example.com"));
        assert!(said.ends_with("(add the CA with --webhook-ca-file)"));
        let name = rustls::Error::InvalidCertificate(CertificateError::NotValidForName);
        assert!(words(&name, "h").starts_with("certificate not valid for h"));
        let plain = std::io::Error::other("connection refused");
        assert_eq!(describe(&plain, "h"), None);
    }

    #[test]
    fn a_ca_file_must_hold_a_pem_certificate() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.pem");
        assert!(
            load_ca_file(&missing)
                .unwrap_err()
                .contains("cannot be read")
        );
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "not pem at all\n").unwrap();
        assert!(
            load_ca_file(&empty)
                .unwrap_err()
                .contains("holds no certificate")
        );
        let broken = dir.path().join("broken.pem");
        std::fs::write(&broken, "-----BEGIN CERTIFICATE-----\n!!!\n").unwrap();
        assert!(
            load_ca_file(&broken)
                .unwrap_err()
                .contains("not a valid PEM")
        );
    }
}
