//! Client side of Pusher's request signing: the HTTP API query signature the server SDKs put on
//! every request, and the private-channel auth an auth endpoint hands a client.
//!
//! A request is signed over `METHOD\nPATH\nQUERY`, where QUERY is every parameter but
//! `auth_signature`, keys lower-cased and sorted, joined `k=v&...`; the signature is the hex
//! HMAC-SHA256 of that string under the app secret (Pusher REST API reference, "Authentication").

use ringcast::pusher::api::signature::body_md5;
use ringcast::pusher::auth;

/// The credentials of one Pusher app.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppCredentials {
    /// App id, part of every API path.
    pub app_id: String,
    /// Public key, sent as `auth_key` and used by clients in `/app/{key}`.
    pub key: String,
    /// Secret, never sent: it keys the HMAC.
    pub secret: String,
}

impl AppCredentials {
    /// The path and signed query of `POST /apps/{id}/events` with `body`, at `timestamp`
    /// (seconds since the Unix epoch; the server rejects it 600 s either side of its clock).
    pub fn signed_events_target(&self, body: &[u8], timestamp: u64) -> String {
        let path = format!("/apps/{}/events", self.app_id);
        let md5 = body_md5(body);
        // Already in sorted order; every value is [0-9a-z.], so nothing needs escaping.
        let query = format!(
            "auth_key={}&auth_timestamp={timestamp}&auth_version=1.0&body_md5={md5}",
            self.key
        );
        let signature = auth::sign(&self.secret, &["POST\n", &path, "\n", &query]);
        format!("{path}?{query}&auth_signature={signature}")
    }

    /// The `auth` value of a `pusher:subscribe` to a private channel, as an auth endpoint hands
    /// it out: `key:hex(HMAC-SHA256(secret, "socket_id:channel"))`.
    pub fn private_channel_auth(&self, socket_id: &str, channel: &str) -> String {
        let signature = auth::sign(&self.secret, &[socket_id, ":", channel]);
        format!("{}:{signature}", self.key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The worked example of Pusher's REST API reference ("Worked authentication example").
    #[test]
    fn matches_the_documented_example() {
        let creds = AppCredentials {
            app_id: "3".into(),
            key: "278d425bdf160c739803".into(),
            secret: "7ad3773142a6692b25b8".into(),
        };
        let body = br#"{"name":"foo","channels":["project-3"],"data":"{\"some\":\"data\"}"}"#;
        assert_eq!(
            creds.signed_events_target(body, 1_353_088_179),
            "/apps/3/events?auth_key=278d425bdf160c739803&auth_timestamp=1353088179\
             &auth_version=1.0&body_md5=ec365a775a4cd0599faeb73354201b6f\
             &auth_signature=da454824c97ba181a32ccc17a72625ba02771f50b50e1e7430e47a1f3f457e6c"
        );
    }

    /// The worked example of Pusher's channel authorization reference.
    #[test]
    fn private_channel_auth_matches_the_documented_example() {
        let creds = AppCredentials {
            app_id: "1".into(),
            key: "278d425bdf160c739803".into(),
            secret: "7ad3773142a6692b25b8".into(),
        };
        assert_eq!(
            creds.private_channel_auth("1234.1234", "private-foobar"),
            "278d425bdf160c739803:58df8b0c36d6982b82c3ecf6b4662e34fe8c25bba48f5369f135bf843651c3a4"
        );
    }
}
