//! Subscription and sign-in signatures: `key:hex(HMAC-SHA256(secret, message))` where the
//! message is `socket_id:channel` (private), `socket_id:channel:channel_data` (presence) or
//! `socket_id::user::user_data` (`pusher:signin`), as the Pusher server SDKs compute them.
//! Signatures are compared in constant time (`hmac`'s `verify_slice`).

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::pusher::apps::AppConfig;
use crate::pusher::json;

type HmacSha256 = Hmac<Sha256>;

/// Why a signature was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthError {
    /// No `auth` field where the channel kind or sign-in needs one.
    Missing,
    /// Not of the form `key:64-hex-digits`.
    Malformed,
    /// The key part names another app.
    WrongKey,
    /// The HMAC does not match.
    BadSignature,
}

impl AuthError {
    /// The message sent to the client.
    pub fn message(self) -> &'static str {
        match self {
            Self::Missing => "Missing auth signature",
            Self::Malformed => "Auth value should be of the form 'key:signature'",
            Self::WrongKey => "Auth key does not match the app key",
            Self::BadSignature => "Invalid signature",
        }
    }
}

/// `hex(HMAC-SHA256(secret, parts joined))`: the signature half of an auth value.
pub fn sign(secret: &str, parts: &[&str]) -> String {
    json::hex(&mac(secret, parts).finalize().into_bytes())
}

fn mac(secret: &str, parts: &[&str]) -> HmacSha256 {
    // HMAC takes keys of any length (RFC 2104), so this never fails.
    let mut mac = match HmacSha256::new_from_slice(secret.as_bytes()) {
        Ok(mac) => mac,
        Err(_) => unreachable!("HMAC accepts keys of any length"),
    };
    for part in parts {
        mac.update(part.as_bytes());
    }
    mac
}

/// Constant-time check that `signature_hex` is the HMAC of `parts` under `secret`.
pub(crate) fn verify_hex(secret: &str, parts: &[&str], signature_hex: &str) -> bool {
    json::unhex::<32>(signature_hex)
        .is_some_and(|sig| mac(secret, parts).verify_slice(&sig).is_ok())
}

/// Checks an `auth` value `key:signature` against `app` for the message made of `parts`.
fn verify_auth(app: &AppConfig, auth: Option<&str>, parts: &[&str]) -> Result<(), AuthError> {
    let auth = auth.ok_or(AuthError::Missing)?;
    let (key, signature) = auth.split_once(':').ok_or(AuthError::Malformed)?;
    if signature.len() != 64 {
        return Err(AuthError::Malformed);
    }
    if key != app.key {
        return Err(AuthError::WrongKey);
    }
    if verify_hex(&app.secret, parts, signature) {
        Ok(())
    } else {
        Err(AuthError::BadSignature)
    }
}

/// Verifies a subscription's `auth`: over `socket_id:channel`, plus `:channel_data` for
/// presence channels (pass the channel_data string exactly as the client sent it).
pub fn verify_channel_auth(
    app: &AppConfig,
    socket_id: &str,
    channel: &str,
    channel_data: Option<&str>,
    auth: Option<&str>,
) -> Result<(), AuthError> {
    match channel_data {
        Some(data) => verify_auth(app, auth, &[socket_id, ":", channel, ":", data]),
        None => verify_auth(app, auth, &[socket_id, ":", channel]),
    }
}

/// Verifies a `pusher:signin` `auth` over `socket_id::user::user_data`.
pub fn verify_user_auth(
    app: &AppConfig,
    socket_id: &str,
    user_data: &str,
    auth: Option<&str>,
) -> Result<(), AuthError> {
    verify_auth(app, auth, &[socket_id, "::user::", user_data])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn docs_app() -> AppConfig {
        AppConfig::new("1", "278d425bdf160c739803", "7ad3773142a6692b25b8")
    }

    #[test]
    fn pusher_docs_private_channel_vector() {
        let sig = "58df8b0c36d6982b82c3ecf6b4662e34fe8c25bba48f5369f135bf843651c3a4";
        assert_eq!(
            sign(
                "7ad3773142a6692b25b8",
                &["1234.1234", ":", "private-foobar"]
            ),
            sig
        );
        let auth = format!("278d425bdf160c739803:{sig}");
        assert_eq!(
            verify_channel_auth(
                &docs_app(),
                "1234.1234",
                "private-foobar",
                None,
                Some(&auth)
            ),
            Ok(())
        );
    }

    #[test]
    fn pusher_docs_presence_channel_vector() {
        let data = r#"{"user_id":10,"user_info":{"name":"Mr. Channels"}}"#;
        let auth =
            "278d425bdf160c739803:31935e7d86dba64c2a90aed31fdc61869f9b22ba9d8863bba239c03ca481bc80";
        assert_eq!(
            verify_channel_auth(
                &docs_app(),
                "1234.1234",
                "presence-foobar",
                Some(data),
                Some(auth)
            ),
            Ok(())
        );
    }

    #[test]
    fn refusals_table() {
        let app = docs_app();
        let good = sign(&app.secret, &["1.1", ":", "private-a"]);
        let upper = good.to_uppercase();
        let cases: Vec<(Option<String>, &str, Result<(), AuthError>)> = vec![
            (Some(format!("{}:{good}", app.key)), "private-a", Ok(())),
            (Some(format!("{}:{upper}", app.key)), "private-a", Ok(())),
            (None, "private-a", Err(AuthError::Missing)),
            (Some(good.clone()), "private-a", Err(AuthError::Malformed)),
            (
                Some(format!("{}:{}", app.key, &good[..63])),
                "private-a",
                Err(AuthError::Malformed),
            ),
            (
                Some(format!("otherkey:{good}")),
                "private-a",
                Err(AuthError::WrongKey),
            ),
            (
                Some(format!("{}:{good}", app.key)),
                "private-b",
                Err(AuthError::BadSignature),
            ),
            (
                Some(format!("{}:{}", app.key, "z".repeat(64))),
                "private-a",
                Err(AuthError::BadSignature),
            ),
        ];
        for (auth, channel, expected) in cases {
            assert_eq!(
                verify_channel_auth(&app, "1.1", channel, None, auth.as_deref()),
                expected,
                "{auth:?}"
            );
        }
    }

    #[test]
    fn signin_signature_covers_user_data() {
        let app = docs_app();
        let user_data = r#"{"id":"42"}"#;
        let auth = format!(
            "{}:{}",
            app.key,
            sign(&app.secret, &["1.2", "::user::", user_data])
        );
        assert_eq!(
            verify_user_auth(&app, "1.2", user_data, Some(&auth)),
            Ok(())
        );
        assert_eq!(
            verify_user_auth(&app, "1.2", r#"{"id":"43"}"#, Some(&auth)),
            Err(AuthError::BadSignature)
        );
        assert_eq!(
            verify_user_auth(&app, "1.3", user_data, Some(&auth)),
            Err(AuthError::BadSignature)
        );
    }
}
