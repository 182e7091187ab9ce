//! The bridge's link to NATS core subjects. Once connected, `async-nats` reconnects by itself
//! (with the bridge's jittered backoff) and subscribes again to every subject it holds, so this
//! link never reports a lost connection: its events mark the broker down and up again, and a
//! publish while it is down is dropped and counted rather than buffered for later.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use async_nats::connection::State;
use futures_util::StreamExt as _;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::BrokerStatus;
use super::bridge::{CONNECT_TIMEOUT, Link, backoff};
use super::url::BrokerUrl;
use super::wire::Subjects;

/// Messages received but not yet read by the bridge, over all subjects; a full queue holds the
/// subscriptions' readers back, and the NATS client's own limits apply behind them.
const RECEIVED_CAPACITY: usize = 1024;

/// A connected NATS link.
pub(super) struct NatsLink {
    client: async_nats::Client,
    /// Each subscribed subject's reader task; aborting one drops its subscriber, which
    /// unsubscribes.
    readers: HashMap<String, JoinHandle<()>>,
    received_tx: mpsc::Sender<Vec<u8>>,
    received: mpsc::Receiver<Vec<u8>>,
}

impl Drop for NatsLink {
    fn drop(&mut self) {
        for (_, reader) in self.readers.drain() {
            reader.abort();
        }
    }
}

impl Link for NatsLink {
    const SUBJECTS: Subjects = Subjects::Nats;

    async fn connect(url: &BrokerUrl, status: &Arc<BrokerStatus>) -> Result<Self, String> {
        let status = Arc::clone(status);
        let lost = Arc::new(AtomicBool::new(false));
        let client = async_nats::ConnectOptions::new()
            .connection_timeout(CONNECT_TIMEOUT)
            .ignore_discovered_servers()
            // 0 asks for no limit: once connected, the client keeps reconnecting.
            .max_reconnects(0)
            .reconnect_delay_callback(|attempt| backoff(u32::try_from(attempt).unwrap_or(u32::MAX)))
            .event_callback(move |event| {
                let (status, lost) = (Arc::clone(&status), Arc::clone(&lost));
                async move {
                    match event {
                        async_nats::Event::Disconnected => {
                            lost.store(true, Ordering::Release);
                            status.mark_down("the connection to nats was lost");
                        }
                        async_nats::Event::Connected if lost.swap(false, Ordering::AcqRel) => {
                            status.mark_up();
                        }
                        _ => {}
                    }
                }
            })
            .connect(url.as_str())
            .await
            .map_err(|e| e.to_string())?;
        let (received_tx, received) = mpsc::channel(RECEIVED_CAPACITY);
        Ok(Self {
            client,
            readers: HashMap::new(),
            received_tx,
            received,
        })
    }

    async fn subscribe(&mut self, subject: &str) -> Result<(), String> {
        let mut subscriber = self
            .client
            .subscribe(subject.to_owned())
            .await
            .map_err(|e| e.to_string())?;
        let received = self.received_tx.clone();
        let reader = tokio::spawn(async move {
            while let Some(message) = subscriber.next().await {
                if received.send(message.payload.to_vec()).await.is_err() {
                    break;
                }
            }
        });
        if let Some(old) = self.readers.insert(subject.to_owned(), reader) {
            old.abort();
        }
        Ok(())
    }

    async fn unsubscribe(&mut self, subject: &str) -> Result<(), String> {
        if let Some(reader) = self.readers.remove(subject) {
            reader.abort();
        }
        Ok(())
    }

    async fn publish(&mut self, subject: &str, body: Vec<u8>) -> Result<bool, String> {
        if self.client.connection_state() != State::Connected {
            return Ok(false);
        }
        self.client
            .publish(subject.to_owned(), body.into())
            .await
            .map(|()| true)
            .map_err(|e| e.to_string())
    }

    async fn flush(&mut self) -> Result<(), String> {
        if self.client.connection_state() != State::Connected {
            return Ok(());
        }
        self.client.flush().await.map_err(|e| e.to_string())
    }

    async fn next(&mut self) -> Result<Vec<u8>, String> {
        match self.received.recv().await {
            Some(bytes) => Ok(bytes),
            // The link holds a sender itself, so the queue never closes while it lives.
            None => Err("the nats subscriptions ended".to_owned()),
        }
    }
}
