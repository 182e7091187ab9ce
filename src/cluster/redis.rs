//! The bridge's link to Redis pub/sub: one connection in subscriber mode for the channels with
//! local interest, one multiplexed connection for `PUBLISH`. A lost connection ends the link;
//! the bridge reconnects and subscribes again. With `redis+sentinel://` every connection first
//! asks the sentinels for the current master, so after a failover the reconnection finds the
//! promoted replica. With `rediss://` both connections run TLS (see [`super::tls`]).

use std::sync::Arc;

use futures_util::StreamExt as _;
use redis::aio::{MultiplexedConnection, PubSubSink, PubSubStream};
use redis::sentinel::{SentinelClientBuilder, SentinelServerType};

use super::BrokerStatus;
use super::bridge::Link;
use super::url::{BrokerUrl, SentinelTarget};
use super::wire::Subjects;

/// A connected Redis link.
pub(super) struct RedisLink {
    sink: PubSubSink,
    stream: PubSubStream,
    publisher: MultiplexedConnection,
}

/// The client's error as the reason `/health` shows.
fn reason(error: &redis::RedisError) -> String {
    error.to_string()
}

/// A client for the master the sentinels name now.
async fn master(target: &SentinelTarget) -> Result<redis::Client, String> {
    let nodes = target.nodes.iter().map(|(host, port)| {
        let host = host.trim_start_matches('[').trim_end_matches(']');
        redis::ConnectionAddr::Tcp(host.to_owned(), *port)
    });
    let mut builder = SentinelClientBuilder::new(nodes, &target.master, SentinelServerType::Master)
        .map_err(|e| reason(&e))?;
    if let Some(db) = target.db {
        builder = builder.set_client_to_redis_db(db);
    }
    if let Some(password) = target.password() {
        builder = builder.set_client_to_redis_password(password);
    }
    let mut sentinel = builder.build().map_err(|e| reason(&e))?;
    sentinel.async_get_client().await.map_err(|e| {
        format!(
            "no master {:?} from the sentinels: {}",
            target.master,
            reason(&e)
        )
    })
}

impl Link for RedisLink {
    const SUBJECTS: Subjects = Subjects::Redis;

    async fn connect(url: &BrokerUrl, _status: &Arc<BrokerStatus>) -> Result<Self, String> {
        let client = match &url.sentinel {
            Some(target) => master(target).await?,
            None => super::tls::client(url)?,
        };
        let (sink, stream) = client
            .get_async_pubsub()
            .await
            .map_err(|e| reason(&e))?
            .split();
        let publisher = client
            .get_multiplexed_async_connection()
            .await
            .map_err(|e| reason(&e))?;
        Ok(Self {
            sink,
            stream,
            publisher,
        })
    }

    async fn subscribe(&mut self, subject: &str) -> Result<(), String> {
        self.sink.subscribe(subject).await.map_err(|e| reason(&e))
    }

    async fn unsubscribe(&mut self, subject: &str) -> Result<(), String> {
        self.sink.unsubscribe(subject).await.map_err(|e| reason(&e))
    }

    async fn publish(&mut self, subject: &str, body: Vec<u8>) -> Result<bool, String> {
        redis::cmd("PUBLISH")
            .arg(subject)
            .arg(body)
            .query_async::<i64>(&mut self.publisher)
            .await
            .map(|_| true)
            .map_err(|e| reason(&e))
    }

    async fn flush(&mut self) -> Result<(), String> {
        // Every PUBLISH was answered before the next command: nothing is left in flight.
        Ok(())
    }

    async fn next(&mut self) -> Result<Vec<u8>, String> {
        match self.stream.next().await {
            Some(message) => Ok(message.get_payload_bytes().to_vec()),
            None => Err("the connection to redis was closed".to_owned()),
        }
    }
}
