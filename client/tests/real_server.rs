//! The client against the real shardcast server (in process, several
//! shards), through the proxy: it resumes after the server closes its
//! connection, after a blackholed link, on another shard than before, and
//! while a publisher keeps publishing, every message arrives exactly once
//! and in order.

mod support;

use std::time::{Duration, Instant};

use shardcast::v1::{Protocol, Router, SUBPROTOCOL};
use shardcast::{CloseCode, Echo, Server, ServerHandle};
use shardcast_client::{Client, Config, DisconnectReason, Error, Event, Events};
use support::proxy::Proxy;
use support::{config, next, until};
use tokio::sync::mpsc;

/// The server's pings in the tests that need a silent link noticed
/// quickly, and the time it gives a pong.
const FAST_HEARTBEAT: (Duration, Duration) = (Duration::from_millis(100), Duration::from_secs(1));

/// A running server, shut down when dropped.
struct TestServer {
    handle: ServerHandle,
}

impl TestServer {
    /// `shards` shards on a free port, pinging every connection as
    /// `heartbeat` says, with rooms that keep 1024 messages; events:
    /// `shard` answers the serving shard's index, `kick` closes the
    /// connection with 1001.
    fn start(shards: usize, heartbeat: (Duration, Duration)) -> TestServer {
        let handle = Server::builder()
            .listen("127.0.0.1:0".parse().unwrap())
            .shards(shards)
            .pin_cores(false)
            .subprotocols([SUBPROTOCOL])
            .heartbeat(Some(heartbeat))
            .room_history(1024, None)
            .build(|_shard| {
                let router = Router::<()>::new()
                    .on("shard", |conn, _payload| {
                        Ok(conn.id().shard().index().to_string().into_bytes())
                    })
                    .on("kick", |conn, _payload| {
                        let _ = conn.close(CloseCode::GOING_AWAY, "kicked");
                        Ok(Vec::new())
                    });
                Protocol::new(router)
            })
            .start()
            .unwrap();
        TestServer { handle }
    }

    fn url(&self) -> String {
        format!("ws://{}/", self.handle.local_addrs()[0])
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.handle
            .shutdown(Instant::now() + Duration::from_millis(200));
    }
}

/// A client of `url` whose first session is up.
async fn connect(mut config: Config, url: &str) -> (Client, Events) {
    config.url = url.to_owned();
    let (client, mut events) = Client::start(config).unwrap();
    let (event, _) = until(&mut events, |event| {
        matches!(event, Event::Connected { .. })
    })
    .await;
    assert!(matches!(
        event,
        Event::Connected {
            session_id: Some(_)
        }
    ));
    (client, events)
}

/// A publisher to `room` of the server at `url`, straight to the server.
/// Its events are dropped: it reads nothing.
async fn publisher(url: &str, room: &str) -> Client {
    let (client, _events) = connect(config(""), url).await;
    client.join(room).await.unwrap();
    client
}

/// What a subscriber saw: the payloads of its messages in order, and the
/// lifecycle events that matter here.
#[derive(Debug, Default)]
struct Seen {
    payloads: Vec<u64>,
    resumed: usize,
    lost: Vec<String>,
}

/// Reads `events` until the message with payload `last` arrived.
async fn collect(events: &mut Events, last: u64, seen: &mut Seen) {
    loop {
        match next(events).await {
            Event::Message(message) => {
                let n = std::str::from_utf8(&message.payload)
                    .unwrap()
                    .parse()
                    .unwrap();
                seen.payloads.push(n);
                if n == last {
                    return;
                }
            }
            Event::Resumed { .. } => seen.resumed += 1,
            Event::RecoveryFailed { room, .. } => seen.lost.push(room),
            Event::Gap { room, last, got } => panic!("gap in {room}: {last} then {got}"),
            _ => {}
        }
    }
}

async fn publish_range(publisher: &Client, room: &str, range: std::ops::RangeInclusive<u64>) {
    for n in range {
        publisher
            .publish_acked(room, n.to_string().as_bytes())
            .await
            .unwrap();
    }
}

#[tokio::test]
async fn resumes_after_the_server_closes_the_connection() {
    let server = TestServer::start(2, (Duration::from_secs(30), Duration::from_secs(30)));
    let (subscriber, mut events) = connect(config(""), &server.url()).await;
    let publisher = publisher(&server.url(), "news").await;
    subscriber.join("news").await.unwrap();
    let mut seen = Seen::default();
    publish_range(&publisher, "news", 1..=5).await;
    collect(&mut events, 5, &mut seen).await;

    subscriber.emit("kick", b"").await.unwrap();
    let (event, _) = until(&mut events, |event| {
        matches!(event, Event::Disconnected { .. })
    })
    .await;
    let Event::Disconnected {
        reason: DisconnectReason::ServerClosed { code, .. },
    } = event
    else {
        panic!("the server's close is reported: {event:?}");
    };
    assert_eq!(code, CloseCode::GOING_AWAY);
    // Published while the subscriber is away: recovered from history.
    publish_range(&publisher, "news", 6..=10).await;
    collect(&mut events, 10, &mut seen).await;
    publish_range(&publisher, "news", 11..=12).await;
    collect(&mut events, 12, &mut seen).await;
    assert_eq!(seen.payloads, (1..=12).collect::<Vec<_>>());
    assert_eq!((seen.resumed, seen.lost.len()), (1, 0), "{seen:?}");
}

#[tokio::test]
async fn resumes_after_a_blackholed_link_is_noticed() {
    let server = TestServer::start(2, FAST_HEARTBEAT);
    let proxy = Proxy::start(server.handle.local_addrs()[0]).await;
    let mut subscriber_config = config("");
    subscriber_config.connect_timeout = Duration::from_millis(500);
    let (subscriber, mut events) = connect(subscriber_config, &proxy.url()).await;
    let publisher = publisher(&server.url(), "news").await;
    subscriber.join("news").await.unwrap();
    let mut seen = Seen::default();
    publish_range(&publisher, "news", 1..=3).await;
    collect(&mut events, 3, &mut seen).await;

    proxy.blackhole();
    let silent_since = Instant::now();
    publish_range(&publisher, "news", 4..=6).await;
    let (event, _) = until(&mut events, |event| {
        matches!(event, Event::Disconnected { .. })
    })
    .await;
    assert!(
        matches!(
            event,
            Event::Disconnected {
                reason: DisconnectReason::Silent(_)
            }
        ),
        "{event:?}"
    );
    // 2 × 100 ms + 1 s, and the time the last frame took to arrive.
    assert!(silent_since.elapsed() < Duration::from_millis(2500));
    proxy.heal();
    publish_range(&publisher, "news", 7..=8).await;
    collect(&mut events, 8, &mut seen).await;
    assert_eq!(seen.payloads, (1..=8).collect::<Vec<_>>());
    assert_eq!((seen.resumed, seen.lost.len()), (1, 0), "{seen:?}");
}

#[tokio::test]
async fn resumes_on_another_shard() {
    let server = TestServer::start(4, (Duration::from_secs(30), Duration::from_secs(30)));
    let proxy = Proxy::start(server.handle.local_addrs()[0]).await;
    let (subscriber, mut events) = connect(config(""), &proxy.url()).await;
    let publisher = publisher(&server.url(), "news").await;
    subscriber.join("news").await.unwrap();
    let first_shard = subscriber.request("shard", b"").await.unwrap();
    let mut seen = Seen::default();
    let mut n = 0;
    for _ in 0..40 {
        n += 1;
        publish_range(&publisher, "news", n..=n).await;
        collect(&mut events, n, &mut seen).await;
        proxy.cut();
        let (_, _) = until(&mut events, |event| matches!(event, Event::Resumed { .. })).await;
        seen.resumed += 1;
        if subscriber.request("shard", b"").await.unwrap() != first_shard {
            n += 1;
            publish_range(&publisher, "news", n..=n).await;
            collect(&mut events, n, &mut seen).await;
            assert_eq!(seen.payloads, (1..=n).collect::<Vec<_>>());
            assert!(seen.lost.is_empty(), "{seen:?}");
            return;
        }
    }
    panic!("40 reconnections all landed on shard {first_shard:?}");
}

#[tokio::test]
async fn every_message_arrives_once_and_in_order_across_cuts_and_a_blackhole() {
    const MESSAGES: u64 = 400;
    let server = TestServer::start(2, FAST_HEARTBEAT);
    let proxy = Proxy::start(server.handle.local_addrs()[0]).await;
    let mut subscriber_config = config("");
    subscriber_config.connect_timeout = Duration::from_millis(500);
    subscriber_config.heartbeat.silence_timeout = Some(Duration::from_millis(600));
    let (subscriber, mut events) = connect(subscriber_config, &proxy.url()).await;
    let publisher = publisher(&server.url(), "feed").await;
    subscriber.join("feed").await.unwrap();

    let (done, mut published) = mpsc::unbounded_channel();
    let publishing = tokio::spawn(async move {
        for n in 1..=MESSAGES {
            publisher
                .publish("feed", n.to_string().as_bytes())
                .await
                .unwrap();
            tokio::time::sleep(Duration::from_millis(4)).await;
        }
        let _ = done.send(());
        publisher
    });
    let faults = tokio::spawn(async move {
        for fault in 0..4 {
            tokio::time::sleep(Duration::from_millis(300)).await;
            if fault == 2 {
                proxy.blackhole();
                tokio::time::sleep(Duration::from_millis(900)).await;
                proxy.heal();
            } else {
                proxy.cut();
            }
        }
        proxy
    });
    let mut seen = Seen::default();
    collect(&mut events, MESSAGES, &mut seen).await;
    tokio::time::timeout(Duration::from_secs(10), published.recv())
        .await
        .expect("the publisher finished")
        .unwrap();
    let _publisher = publishing.await.unwrap();
    let _proxy = faults.await.unwrap();
    assert_eq!(seen.payloads, (1..=MESSAGES).collect::<Vec<_>>());
    assert!(seen.lost.is_empty(), "{seen:?}");
    assert!(seen.resumed >= 3, "{} resumes", seen.resumed);
}

#[tokio::test]
async fn a_server_without_shardcast_v1_is_refused_attempt_after_attempt() {
    let handle = Server::builder()
        .listen("127.0.0.1:0".parse().unwrap())
        .shards(1)
        .pin_cores(false)
        .build(|_shard| Echo)
        .start()
        .unwrap();
    let server = TestServer { handle };
    let mut config = config(&server.url());
    config.backoff.max_attempts = Some(2);
    let (_client, mut events) = Client::start(config).unwrap();
    for attempt in 1..=2 {
        assert!(
            matches!(next(&mut events).await, Event::Connecting { attempt: got } if got == attempt)
        );
        let event = next(&mut events).await;
        assert!(
            matches!(
                event,
                Event::Disconnected {
                    reason: DisconnectReason::Failed(Error::SubprotocolRefused)
                }
            ),
            "{event:?}"
        );
    }
    assert!(matches!(
        next(&mut events).await,
        Event::GaveUp { attempts: 2 }
    ));
}
