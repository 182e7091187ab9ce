//! Apps: the credentials and switches of each Pusher app a server hosts, from the TOML config's
//! `[[apps]]` sections, or one development app when none is configured.
//!
//! ```toml
//! [[apps]]
//! id = "1001"
//! key = "app-key"
//! secret = "app-secret"
//! client_events = true
//! user_authentication = true
//! limits = { max_connections = 10000, max_event_payload_bytes = 10240 }
//! ```

use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::pusher::json;

/// One app: who it is (id, key, secret) and what its clients may do.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AppConfig {
    /// The app id, the `{id}` in HTTP API paths.
    pub id: String,
    /// The public key clients connect with (`/app/{key}`) and that prefixes auth values.
    pub key: String,
    /// The shared secret signatures are made with; never leaves the server.
    pub secret: String,
    /// A disabled app refuses connections (4003) and API calls (403).
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// Whether clients may send `client-*` events on private and presence channels.
    #[serde(default)]
    pub client_events: bool,
    /// Whether clients may sign in (`pusher:signin`) to receive user events.
    #[serde(default)]
    pub user_authentication: bool,
    /// Per-app limits.
    #[serde(default)]
    pub limits: AppLimits,
}

fn default_true() -> bool {
    true
}

/// Per-app limits; defaults are Pusher's documented ones (listed in docs/operations.md).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AppLimits {
    /// Most simultaneous connections of this app; `None` for no app-level cap (4004 beyond).
    pub max_connections: Option<u32>,
    /// Largest event `data`, from the API or a client, in bytes (API: 413; client: pusher:error).
    pub max_event_payload_bytes: usize,
    /// Most channels one API event may name (400 beyond).
    pub max_channels_per_event: usize,
    /// Most events in one batch (400 beyond).
    pub max_batch_events: usize,
    /// Longest event name, in bytes (400 / pusher:error beyond).
    pub max_event_name_bytes: usize,
    /// Client events each connection may send per second, with bursts of the same size.
    pub client_events_per_second: u32,
    /// Most channels one connection may be subscribed to (`pusher:subscription_error`
    /// `LimitReached` beyond).
    pub max_subscriptions_per_connection: usize,
    /// Most channels the app may have occupied in the process at once: a subscription that
    /// would open one more is refused (`LimitReached`, status 4100).
    pub max_channels: u32,
    /// Most distinct users on one presence channel (Pusher's 100; `LimitReached`, status 4100).
    pub max_presence_members: u32,
    /// Largest `user_info` of a presence member, as the JSON text in `channel_data`, in bytes
    /// (Pusher's 1 KB; `LimitReached`, status 400).
    pub max_presence_user_info_bytes: usize,
}

impl Default for AppLimits {
    fn default() -> Self {
        Self {
            max_connections: None,
            max_event_payload_bytes: 10 * 1024,
            max_channels_per_event: 100,
            max_batch_events: 10,
            max_event_name_bytes: 200,
            client_events_per_second: 10,
            max_subscriptions_per_connection: 128,
            max_channels: 1_000_000,
            max_presence_members: 100,
            max_presence_user_info_bytes: 1024,
        }
    }
}

/// Development-app credentials given by the operator (`RINGCAST_APP_ID`, `_KEY`, `_SECRET`);
/// the ones left `None` are generated. Reading the environment is the caller's business.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DevCredentials {
    /// App id, or generate one.
    pub id: Option<String>,
    /// App key, or generate one.
    pub key: Option<String>,
    /// App secret, or generate one.
    pub secret: Option<String>,
}

impl AppConfig {
    /// An enabled app with default switches (no client events, no user authentication) and
    /// default limits.
    pub fn new(id: &str, key: &str, secret: &str) -> Self {
        Self {
            id: id.to_owned(),
            key: key.to_owned(),
            secret: secret.to_owned(),
            enabled: true,
            client_events: false,
            user_authentication: false,
            limits: AppLimits::default(),
        }
    }

    /// The app a server runs with when none is configured: client events and user
    /// authentication on, so pusher-js works out of the box. Missing credentials are derived
    /// from `entropy` (the caller's 32 random bytes): a 6-digit id, a 20-hex-digit key and
    /// secret, shaped like Pusher's.
    pub fn development(credentials: DevCredentials, entropy: [u8; 32]) -> Self {
        let derive = |label: &str| {
            Sha256::new()
                .chain_update(entropy)
                .chain_update(label)
                .finalize()
        };
        let id = credentials.id.unwrap_or_else(|| {
            let digest = derive("id");
            let n = u32::from_be_bytes([digest[0], digest[1], digest[2], digest[3]]);
            (100_000 + n % 900_000).to_string()
        });
        let key = credentials
            .key
            .unwrap_or_else(|| json::hex(&derive("key")[..10]));
        let secret = credentials
            .secret
            .unwrap_or_else(|| json::hex(&derive("secret")[..10]));
        Self {
            client_events: true,
            user_authentication: true,
            ..Self::new(&id, &key, &secret)
        }
    }

    /// Checks what serde cannot: non-empty credentials and ids usable in an API path.
    pub fn validate(&self) -> Result<(), AppsError> {
        if self.key.is_empty() || self.secret.is_empty() {
            return Err(AppsError::EmptyCredential(self.id.clone()));
        }
        let path_safe = |s: &str| {
            s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        };
        if self.id.is_empty() || !path_safe(&self.id) || !path_safe(&self.key) {
            return Err(AppsError::InvalidIdOrKey(self.id.clone()));
        }
        Ok(())
    }
}

/// An app's position in [`Apps`]; what a connection stores instead of the app itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct AppIndex(pub u16);

/// Why a set of apps was refused at start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AppsError {
    /// Two apps share this id.
    DuplicateId(String),
    /// Two apps share this key.
    DuplicateKey(String),
    /// The app with this id has an empty key or secret.
    EmptyCredential(String),
    /// This id, or the key of the app with this id, has characters outside `[A-Za-z0-9_-]`.
    InvalidIdOrKey(String),
    /// More apps than an [`AppIndex`] can number.
    TooMany,
}

impl std::fmt::Display for AppsError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::DuplicateId(id) => write!(f, "two [[apps]] have id {id:?}; ids must be unique"),
            Self::DuplicateKey(id) => write!(
                f,
                "app {id:?} reuses another app's key; keys must be unique"
            ),
            Self::EmptyCredential(id) => write!(f, "app {id:?} needs a non-empty key and secret"),
            Self::InvalidIdOrKey(id) => {
                write!(
                    f,
                    "app {id:?}: id and key may use only A-Z a-z 0-9 _ - and must not be empty"
                )
            }
            Self::TooMany => write!(f, "at most {} apps are supported", u16::MAX),
        }
    }
}

impl std::error::Error for AppsError {}

/// Every app of the process, read-only after start, looked up by key (connections) and by id
/// (HTTP API).
#[derive(Debug, Clone)]
pub struct Apps {
    apps: Vec<AppConfig>,
}

impl Apps {
    /// Validates `apps` (each one, and ids and keys unique).
    pub fn new(apps: Vec<AppConfig>) -> Result<Self, AppsError> {
        if apps.len() > usize::from(u16::MAX) {
            return Err(AppsError::TooMany);
        }
        for (i, app) in apps.iter().enumerate() {
            app.validate()?;
            if apps[..i].iter().any(|other| other.id == app.id) {
                return Err(AppsError::DuplicateId(app.id.clone()));
            }
            if apps[..i].iter().any(|other| other.key == app.key) {
                return Err(AppsError::DuplicateKey(app.id.clone()));
            }
        }
        Ok(Self { apps })
    }

    /// The app with client key `key`.
    pub fn by_key(&self, key: &str) -> Option<(AppIndex, &AppConfig)> {
        self.find(|app| app.key == key)
    }

    /// The app with id `id`.
    pub fn by_id(&self, id: &str) -> Option<(AppIndex, &AppConfig)> {
        self.find(|app| app.id == id)
    }

    /// The app at `index`.
    pub fn app(&self, index: AppIndex) -> Option<&AppConfig> {
        self.apps.get(usize::from(index.0))
    }

    /// All apps, in configuration order.
    pub fn iter(&self) -> impl Iterator<Item = &AppConfig> {
        self.apps.iter()
    }

    fn find(&self, pred: impl Fn(&AppConfig) -> bool) -> Option<(AppIndex, &AppConfig)> {
        // A linear scan: deployments have a handful of apps, and lookups happen per connection
        // or API request, never per message.
        let i = self.apps.iter().position(pred)?;
        Some((AppIndex(u16::try_from(i).ok()?), self.apps.get(i)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Deserialize)]
    struct File {
        apps: Vec<AppConfig>,
    }

    #[test]
    fn toml_apps_sections() {
        let text = r#"
            [[apps]]
            id = "1001"
            key = "k1"
            secret = "s1"

            [[apps]]
            id = "1002"
            key = "k2"
            secret = "s2"
            enabled = false
            client_events = true
            user_authentication = true
            limits = { max_connections = 5, max_event_payload_bytes = 20480 }
        "#;
        let file: File = match toml::from_str(text) {
            Ok(file) => file,
            Err(e) => panic!("{e}"),
        };
        let first = &file.apps[0];
        assert!(first.enabled && !first.client_events && !first.user_authentication);
        assert_eq!(first.limits, AppLimits::default());
        let second = &file.apps[1];
        assert!(!second.enabled && second.client_events && second.user_authentication);
        assert_eq!(second.limits.max_connections, Some(5));
        assert_eq!(second.limits.max_event_payload_bytes, 20480);
        assert_eq!(second.limits.max_batch_events, 10);
        let apps = Apps::new(file.apps).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            apps.by_key("k2").map(|(i, a)| (i, a.id.as_str())),
            Some((AppIndex(1), "1002"))
        );
        assert_eq!(apps.by_id("1001").map(|(i, _)| i), Some(AppIndex(0)));
        assert!(apps.by_key("nope").is_none());
        assert_eq!(apps.app(AppIndex(1)).map(|a| a.key.as_str()), Some("k2"));
        assert!(apps.app(AppIndex(2)).is_none());
    }

    #[test]
    fn unknown_fields_are_refused() {
        let text = "[[apps]]\nid = \"1\"\nkey = \"k\"\nsecret = \"s\"\nclient_event = true\n";
        assert!(toml::from_str::<File>(text).is_err());
    }

    #[test]
    fn invalid_sets_are_refused() {
        let a = AppConfig::new("1", "k", "s");
        let cases = [
            (
                vec![a.clone(), AppConfig::new("1", "k2", "s")],
                AppsError::DuplicateId("1".into()),
            ),
            (
                vec![a.clone(), AppConfig::new("2", "k", "s")],
                AppsError::DuplicateKey("2".into()),
            ),
            (
                vec![AppConfig::new("3", "", "s")],
                AppsError::EmptyCredential("3".into()),
            ),
            (
                vec![AppConfig::new("3", "k", "")],
                AppsError::EmptyCredential("3".into()),
            ),
            (
                vec![AppConfig::new("a/b", "k", "s")],
                AppsError::InvalidIdOrKey("a/b".into()),
            ),
            (
                vec![AppConfig::new("4", "k?", "s")],
                AppsError::InvalidIdOrKey("4".into()),
            ),
        ];
        for (apps, expected) in cases {
            assert_eq!(Apps::new(apps).err(), Some(expected));
        }
    }

    #[test]
    fn development_app_uses_given_credentials_and_generates_the_rest() {
        let given = DevCredentials {
            id: Some("7".into()),
            key: Some("key".into()),
            secret: Some("sec".into()),
        };
        let app = AppConfig::development(given, [0; 32]);
        assert_eq!(
            (app.id.as_str(), app.key.as_str(), app.secret.as_str()),
            ("7", "key", "sec")
        );
        assert!(app.client_events && app.user_authentication && app.enabled);

        let a = AppConfig::development(DevCredentials::default(), [1; 32]);
        let b = AppConfig::development(DevCredentials::default(), [2; 32]);
        assert_ne!(a.key, b.key);
        assert_ne!(a.secret, b.secret);
        assert_ne!(a.key, a.secret);
        assert_eq!(a.key.len(), 20);
        assert_eq!(a.id.len(), 6);
        assert!(a.id.bytes().all(|c| c.is_ascii_digit()));
        assert_eq!(a.validate(), Ok(()));
    }
}
