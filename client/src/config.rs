//! How a client connects and behaves: every knob, with its default.

use std::time::Duration;

use crate::backoff::Backoff;
use crate::batch::Batching;
use crate::outbox::SendBuffer;

/// Which protocol the client speaks on its connections.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Mode {
    /// `shardcast.v1` envelopes (the subprotocol is required): sessions
    /// with resume, rooms, events, requests, presence. The default.
    #[default]
    V1,
    /// Plain WebSocket text and binary messages, no subprotocol; the
    /// client still reconnects with backoff and keeps its send buffer, but
    /// there is no session to resume.
    Raw,
}

/// Liveness of the connection: how long silence may last, and whether the
/// client pings. The client always answers the server's pings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Heartbeat {
    /// After this long without hearing anything (no frame of any kind) the
    /// connection is taken as dead and the client reconnects. `None`, the
    /// default: `2 × heartbeat_ms + 1 s`, with `heartbeat_ms` from the
    /// server's `Welcome` (no bound if the server has heartbeats off); in
    /// raw mode, which has no `Welcome`, `2 × 30 s + 1 s` from the
    /// server's default heartbeat interval.
    pub silence_timeout: Option<Duration>,
    /// Ping the server this often, so that a silent link is noticed even if
    /// the server does not ping (or pings rarely). Default: `None`.
    pub ping_interval: Option<Duration>,
}

impl Heartbeat {
    /// The shardcast server's default ping interval, assumed in raw mode.
    pub const SERVER_DEFAULT_INTERVAL: Duration = Duration::from_secs(30);

    /// The defaults: silence bound from the server's interval, no pings.
    pub const DEFAULT: Heartbeat = Heartbeat {
        silence_timeout: None,
        ping_interval: None,
    };

    /// The silence bound for a server that pings every `interval` (`None`
    /// for a server with heartbeats off): the configured one, or
    /// `2 × interval + 1 s`.
    #[must_use]
    pub fn silence_bound(&self, interval: Option<Duration>) -> Option<Duration> {
        self.silence_timeout
            .or_else(|| interval.map(|interval| interval * 2 + Duration::from_secs(1)))
    }
}

impl Default for Heartbeat {
    fn default() -> Self {
        Heartbeat::DEFAULT
    }
}

/// The configuration of a [`Client`](crate::Client).
///
/// Start from [`Config::new`] with the server's URL, then change the fields
/// that matter:
///
/// ```
/// use std::time::Duration;
/// use shardcast_client::{Batching, Config, WhenFull};
///
/// let mut config = Config::new("ws://127.0.0.1:8080/");
/// config.backoff.max_delay = Duration::from_secs(5);
/// config.buffer.when_full = WhenFull::Wait;
/// config.batching = Some(Batching::DEFAULT);
/// ```
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct Config {
    /// The server: `ws://HOST[:PORT][/PATH]`. Only `ws://`: the client has
    /// no TLS (put it behind a TLS-terminating proxy, or use a local link).
    pub url: String,
    /// The protocol spoken. Default: [`Mode::V1`].
    pub mode: Mode,
    /// Extra headers of the upgrade request, such as `Authorization`.
    pub headers: Vec<(String, String)>,
    /// Reconnection delays and attempts. Default: [`Backoff::DEFAULT`].
    pub backoff: Backoff,
    /// The send buffer. Default: [`SendBuffer::DEFAULT`].
    pub buffer: SendBuffer,
    /// Batching of outgoing envelopes (`shardcast.v1` only); `None`, the
    /// default, writes each envelope as its own message.
    pub batching: Option<Batching>,
    /// Liveness checks. Default: [`Heartbeat::DEFAULT`].
    pub heartbeat: Heartbeat,
    /// How long a connection attempt may take, from the TCP connect to
    /// the session being ready (the upgrade, the `Welcome` and the answer
    /// to a `Resume`). Default: 10 s.
    pub connect_timeout: Duration,
    /// How long a request (join, leave, acknowledged publish, request)
    /// waits for its answer, counted from the call, time spent in the send
    /// buffer included. Default: 10 s.
    pub request_timeout: Duration,
    /// Whether to offer permessage-deflate. Default: true. Messages are
    /// compressed only when that makes them smaller.
    pub compression: bool,
    /// The largest message accepted from the server, in bytes (after
    /// decompression too). Default: 16 MiB.
    pub max_message_size: usize,
}

impl Config {
    /// The defaults, for the server at `url`.
    pub fn new(url: impl Into<String>) -> Config {
        Config {
            url: url.into(),
            mode: Mode::V1,
            headers: Vec::new(),
            backoff: Backoff::DEFAULT,
            buffer: SendBuffer::DEFAULT,
            batching: None,
            heartbeat: Heartbeat::DEFAULT,
            connect_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(10),
            compression: true,
            max_message_size: 16 << 20,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn silence_bound_is_two_intervals_and_a_second_unless_configured() {
        let heartbeat = Heartbeat::DEFAULT;
        assert_eq!(
            heartbeat.silence_bound(Some(Duration::from_millis(500))),
            Some(Duration::from_secs(2))
        );
        assert_eq!(heartbeat.silence_bound(None), None);
        let fixed = Heartbeat {
            silence_timeout: Some(Duration::from_secs(3)),
            ..heartbeat
        };
        assert_eq!(
            fixed.silence_bound(Some(Duration::from_millis(500))),
            Some(Duration::from_secs(3))
        );
        assert_eq!(fixed.silence_bound(None), Some(Duration::from_secs(3)));
    }
}
