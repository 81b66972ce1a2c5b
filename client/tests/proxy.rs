//! The client through a proxy that fails like a network: connections cut
//! on both sides at once, and a link that goes silent (blackholed) while
//! its sockets stay open.

mod support;

use std::time::{Duration, Instant};

use shardcast_client::{Client, DisconnectReason, Event};
use support::proxy::Proxy;
use support::server::{Got, ScriptedServer};
use support::{config, until};

const EPOCH: u64 = 5;

#[tokio::test]
async fn a_cut_connection_is_resumed_from_the_last_position() {
    let mut server = ScriptedServer::start().await;
    let proxy = Proxy::start(server.addr()).await;
    let (client, mut events) = Client::start(config(&proxy.url())).unwrap();
    let mut conn = server.accept().await;
    conn.welcome("s1", b"t1", 30_000).await;
    let joining = tokio::spawn({
        let client = client.clone();
        async move { client.join("r").await }
    });
    let Got::Join(_, Some(ack), _) = conn.recv_envelope().await else {
        panic!("no join");
    };
    conn.send(|w| w.ack_position(ack, 0, EPOCH)).await;
    joining.await.unwrap().unwrap();
    conn.message("r", 1, EPOCH, b"one").await;
    let (_, _) = until(&mut events, |event| matches!(event, Event::Message(_))).await;

    proxy.cut();
    assert!(
        conn.closed_within(Duration::from_secs(2)).await,
        "server side cut"
    );
    let (event, _) = until(&mut events, |event| {
        matches!(event, Event::Disconnected { .. })
    })
    .await;
    assert!(matches!(
        event,
        Event::Disconnected {
            reason: DisconnectReason::Eof
        }
    ));
    let mut conn = server.accept().await;
    assert_eq!(
        conn.recv_envelope().await,
        Got::Resume("s1".into(), b"t1".to_vec(), vec![("r".into(), 1, EPOCH)])
    );
    conn.welcome("fresh", b"x", 30_000).await;
    conn.resumed("s1", b"t2", &[("r", 2, EPOCH, None)]).await;
    conn.message("r", 2, EPOCH, b"two").await;
    let (event, _) = until(&mut events, |event| matches!(event, Event::Message(_))).await;
    let Event::Message(message) = event else {
        unreachable!()
    };
    assert_eq!(
        (message.position.offset, message.payload),
        (2, b"two".to_vec())
    );
}

#[tokio::test]
async fn a_blackholed_link_is_noticed_and_resumed_once_healed() {
    let mut server = ScriptedServer::start().await;
    let proxy = Proxy::start(server.addr()).await;
    let mut config = config(&proxy.url());
    config.connect_timeout = Duration::from_millis(500);
    let (_client, mut events) = Client::start(config).unwrap();
    let mut old = server.accept().await;
    // Pings every 100 ms: silence is noticed after 1.2 s.
    old.welcome("s1", b"t1", 100).await;
    let (_, _) = until(&mut events, |event| {
        matches!(event, Event::Connected { .. })
    })
    .await;

    let pinging = tokio::spawn(async move {
        loop {
            old.ping(b"").await;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(events.try_next().is_none(), "the pings keep the link alive");

    proxy.blackhole();
    let silent_since = Instant::now();
    let (event, _) = until(&mut events, |event| {
        matches!(event, Event::Disconnected { .. })
    })
    .await;
    assert!(matches!(
        event,
        Event::Disconnected {
            reason: DisconnectReason::Silent(_)
        }
    ));
    let noticed = silent_since.elapsed();
    assert!(noticed < Duration::from_millis(2500), "{noticed:?}");
    // Attempts through the blackhole time out, without a Welcome.
    let (event, _) = until(&mut events, |event| {
        matches!(event, Event::Disconnected { .. })
    })
    .await;
    assert!(matches!(
        event,
        Event::Disconnected {
            reason: DisconnectReason::Failed(shardcast_client::Error::Timeout)
        }
    ));
    proxy.heal();
    // The proxy connected upstream for each attempt; the first one whose
    // upgrade goes through resumes the session.
    loop {
        let Some(mut conn) = server.try_accept(Duration::from_millis(300)).await else {
            continue;
        };
        assert_eq!(
            conn.recv_envelope().await,
            Got::Resume("s1".into(), b"t1".to_vec(), Vec::new())
        );
        conn.welcome("fresh", b"x", 30_000).await;
        conn.resumed("s1", b"t2", &[]).await;
        break;
    }
    let (event, _) = until(&mut events, |event| matches!(event, Event::Resumed { .. })).await;
    assert!(matches!(event, Event::Resumed { session_id } if session_id == "s1"));
    pinging.abort();
}
