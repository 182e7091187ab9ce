//! Trust for a `rediss://` broker: the client verifies the broker's certificate against the CA
//! in `broker_ca_file` when one is set, else against the system's roots. The file is read when
//! the configuration is checked, so a missing or malformed file stops the start with the
//! reason, and again on every connection, so a renewed CA is taken up on the next reconnection.

use std::path::Path;

use redis::{Client, TlsCertificates};

use super::url::BrokerUrl;

/// The line every PEM certificate starts with.
const PEM_CERTIFICATE: &[u8] = b"-----BEGIN CERTIFICATE-----";

/// The Redis client for `url`: over TLS trusting its CA file when it names one.
pub(super) fn client(url: &BrokerUrl) -> Result<Client, String> {
    let built = match url.ca_file() {
        Some(path) => Client::build_with_tls(
            url.as_str(),
            TlsCertificates {
                client_tls: None,
                root_cert: Some(read_ca(path)?),
            },
        ),
        None => Client::open(url.as_str()),
    };
    built.map_err(|e| e.to_string())
}

/// The PEM text of the CA file, refused unless it holds at least one certificate.
fn read_ca(path: &Path) -> Result<Vec<u8>, String> {
    let pem = std::fs::read(path)
        .map_err(|e| format!("cannot read the CA file {}: {e}", path.display()))?;
    if !pem
        .windows(PEM_CERTIFICATE.len())
        .any(|window| window == PEM_CERTIFICATE)
    {
        return Err(format!(
            "the CA file {} holds no PEM certificate (-----BEGIN CERTIFICATE-----)",
            path.display()
        ));
    }
    Ok(pem)
}

/// Why a CA file given with `url` (which carries it, see [`BrokerUrl::trusting`]) cannot work,
/// if it cannot: no `rediss://` broker, or a file that cannot be read or holds no valid
/// certificate.
pub(crate) fn ca_problem(url: Option<&BrokerUrl>) -> Option<String> {
    match url {
        Some(url) if url.tls => client(url).err().map(|e| {
            format!("{e}; give the PEM file of the CA that signs the broker's certificate")
        }),
        _ => Some(
            "is set but the broker is not rediss://; set --broker rediss://HOST:PORT or leave \
             broker_ca_file out"
                .to_owned(),
        ),
    }
}
