//! Connecting to etcd, and the delay between attempts when it is not there (yet).

use std::time::Duration;

use etcd_client::{Client, ConnectOptions};

pub async fn connect(endpoints: &[String]) -> Result<Client, etcd_client::Error> {
    // HTTP/2 pings notice a dead etcd even while a watch is quiet.
    let options = ConnectOptions::new()
        .with_connect_timeout(Duration::from_secs(2))
        .with_keep_alive(Duration::from_secs(5), Duration::from_secs(5))
        .with_keep_alive_while_idle(true);
    Client::connect(endpoints, Some(options)).await
}

/// Doubling delays from 100ms up to 5s; `reset` after a success.
pub struct Backoff(Duration);

impl Backoff {
    const FIRST: Duration = Duration::from_millis(100);
    const MAX: Duration = Duration::from_secs(5);

    pub fn new() -> Self {
        Backoff(Self::FIRST)
    }

    pub fn next_delay(&mut self) -> Duration {
        let delay = self.0;
        self.0 = (self.0 * 2).min(Self::MAX);
        delay
    }

    pub fn reset(&mut self) {
        self.0 = Self::FIRST;
    }
}
