//! The client against a scripted `shardcast.v1` server on a loopback port:
//! each test plays the server's side of the session contract (the
//! README's sessions paragraph, and the schema's `Welcome` and `Resume`)
//! step by step and checks what the client sends and reports.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use shardcast_client::{
    Batching, Client, Config, DisconnectReason, Error, ErrorCode, Event, Events, Mode, Position,
    SendBuffer, WhenFull,
};
use support::server::{Conn, Got, ScriptedServer};
use support::{config, ended, next, until};

const EPOCH: u64 = 77;

/// Starts a client of `server` and plays the first connection up to the
/// fresh `Welcome` of session `s1` (token `t1`).
async fn connected(
    server: &mut ScriptedServer,
    configure: impl FnOnce(&mut Config),
) -> (Client, Events, Conn) {
    let mut config = config(&server.url());
    configure(&mut config);
    let (client, mut events) = Client::start(config).unwrap();
    let mut conn = server.accept().await;
    assert!(conn.v1, "the client offers shardcast.v1");
    conn.welcome("s1", b"t1", 30_000).await;
    assert!(matches!(
        next(&mut events).await,
        Event::Connecting { attempt: 1 }
    ));
    let event = next(&mut events).await;
    assert!(
        matches!(&event, Event::Connected { session_id: Some(id) } if id == "s1"),
        "{event:?}"
    );
    (client, events, conn)
}

/// Joins `room` through `conn`, acknowledged at `offset`.
async fn join(client: &Client, conn: &mut Conn, room: &str, offset: u64) {
    let joining = tokio::spawn({
        let client = client.clone();
        let room = room.to_owned();
        async move { client.join(&room).await }
    });
    let Got::Join(got, Some(ack), false) = conn.recv_envelope().await else {
        panic!("no join");
    };
    assert_eq!(got, room);
    conn.send(|w| w.ack_position(ack, offset, EPOCH)).await;
    assert_eq!(
        joining.await.unwrap().unwrap(),
        Position::new(offset, EPOCH)
    );
}

fn message(event: Event) -> (String, u64, Vec<u8>) {
    match event {
        Event::Message(message) => (message.room, message.position.offset, message.payload),
        other => panic!("expected a message, got {other:?}"),
    }
}

#[tokio::test]
async fn connects_and_reports_the_new_session() {
    let mut server = ScriptedServer::start().await;
    let (client, mut events, mut conn) = connected(&mut server, |_| {}).await;
    client.close().await;
    assert_eq!(conn.recv_envelope().await, Got::Close(Some(1000)));
    assert!(matches!(
        next(&mut events).await,
        Event::Disconnected {
            reason: DisconnectReason::Closed
        }
    ));
    assert!(ended(&mut events).await, "the stream ends after close");
    assert!(matches!(
        client.publish("a", b"x").await,
        Err(Error::Closed)
    ));
}

#[tokio::test]
async fn joins_publishes_and_receives_in_order() {
    let mut server = ScriptedServer::start().await;
    let (client, mut events, mut conn) = connected(&mut server, |_| {}).await;
    join(&client, &mut conn, "lobby", 10).await;

    let publishing = tokio::spawn({
        let client = client.clone();
        async move { client.publish_acked("lobby", b"hello").await }
    });
    let Got::Publish(room, payload, Some(ack)) = conn.recv_envelope().await else {
        panic!("no publish");
    };
    assert_eq!(
        (room.as_str(), payload.as_slice()),
        ("lobby", &b"hello"[..])
    );
    conn.send(|w| w.ack_position(ack, 11, EPOCH)).await;
    assert_eq!(publishing.await.unwrap().unwrap(), Position::new(11, EPOCH));

    client.publish("lobby", b"no ack").await.unwrap();
    assert_eq!(
        conn.recv_envelope().await,
        Got::Publish("lobby".into(), b"no ack".to_vec(), None)
    );

    conn.message("lobby", 11, EPOCH, b"hello").await;
    conn.presence("lobby", "bob", true, 2).await;
    conn.message("lobby", 12, EPOCH, b"no ack").await;
    assert_eq!(
        message(next(&mut events).await),
        ("lobby".into(), 11, b"hello".to_vec())
    );
    let Event::Presence(presence) = next(&mut events).await else {
        panic!("no presence");
    };
    assert_eq!(
        (presence.member.as_str(), presence.joined, presence.count),
        ("bob", true, 2)
    );
    assert_eq!(
        message(next(&mut events).await),
        ("lobby".into(), 12, b"no ack".to_vec())
    );

    let leaving = tokio::spawn({
        let client = client.clone();
        async move { client.leave("lobby").await }
    });
    let Got::Leave(room, Some(ack)) = conn.recv_envelope().await else {
        panic!("no leave");
    };
    assert_eq!(room, "lobby");
    conn.send(|w| w.ack_ok(ack, b"")).await;
    leaving.await.unwrap().unwrap();
    conn.message("lobby", 13, EPOCH, b"after leaving").await;
    conn.message("other", 1, EPOCH, b"never joined").await;
    conn.send(|w| w.error(ErrorCode::SlowConsumer, "dropped", None, Some("x")))
        .await;
    assert!(
        matches!(
            next(&mut events).await,
            Event::ServerError { code: ErrorCode::SlowConsumer, room: Some(room), .. } if room == "x"
        ),
        "messages of rooms the client is not in are dropped"
    );
}

#[tokio::test]
async fn refused_requests_fail_with_the_servers_code() {
    let mut server = ScriptedServer::start().await;
    let (client, _events, mut conn) = connected(&mut server, |_| {}).await;
    let joining = tokio::spawn({
        let client = client.clone();
        async move { client.join("admin").await }
    });
    let Got::Join(_, Some(ack), _) = conn.recv_envelope().await else {
        panic!("no join");
    };
    conn.send(|w| w.ack_error(ack, ErrorCode::Forbidden, "no"))
        .await;
    let error = joining.await.unwrap().unwrap_err();
    assert_eq!(error.code(), Some(ErrorCode::Forbidden));
    let requesting = tokio::spawn({
        let client = client.clone();
        async move { client.request("nope", b"").await }
    });
    let Got::Event(_, _, Some(ack)) = conn.recv_envelope().await else {
        panic!("no event");
    };
    conn.send(|w| w.error(ErrorCode::UnknownEvent, "", Some(ack), None))
        .await;
    assert_eq!(
        requesting.await.unwrap().unwrap_err().code(),
        Some(ErrorCode::UnknownEvent),
        "an Error envelope naming the ack id answers the request"
    );
}

#[tokio::test]
async fn requests_get_their_answer_or_time_out() {
    let mut server = ScriptedServer::start().await;
    let (client, _events, mut conn) = connected(&mut server, |config| {
        config.request_timeout = Duration::from_millis(300);
    })
    .await;
    let requesting = tokio::spawn({
        let client = client.clone();
        async move { client.request("echo", b"ping").await }
    });
    let Got::Event(name, payload, Some(ack)) = conn.recv_envelope().await else {
        panic!("no request");
    };
    assert_eq!((name.as_str(), payload.as_slice()), ("echo", &b"ping"[..]));
    conn.send(|w| w.ack_ok(ack, b"pong")).await;
    assert_eq!(requesting.await.unwrap().unwrap(), b"pong");

    let started = Instant::now();
    let requesting = tokio::spawn({
        let client = client.clone();
        async move { client.request("slow", b"").await }
    });
    let Got::Event(_, _, Some(late)) = conn.recv_envelope().await else {
        panic!("no request");
    };
    assert!(matches!(requesting.await.unwrap(), Err(Error::Timeout)));
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(300) && waited < Duration::from_secs(2),
        "{waited:?}"
    );
    // The late answer is ignored; the next request still works.
    conn.send(|w| w.ack_ok(late, b"late")).await;
    let requesting = tokio::spawn({
        let client = client.clone();
        async move { client.request("echo", b"again").await }
    });
    let Got::Event(_, _, Some(ack)) = conn.recv_envelope().await else {
        panic!("no request");
    };
    assert_ne!(ack, late, "ack ids are not reused");
    conn.send(|w| w.ack_ok(ack, b"again")).await;
    assert_eq!(requesting.await.unwrap().unwrap(), b"again");
}

#[tokio::test]
async fn server_events_reach_their_handler_and_are_answered() {
    let mut server = ScriptedServer::start().await;
    let (client, _events, mut conn) = connected(&mut server, |_| {}).await;
    let calls = Arc::new(AtomicUsize::new(0));
    client.on("greet", {
        let calls = Arc::clone(&calls);
        move |payload| {
            calls.fetch_add(1, Ordering::SeqCst);
            Ok([b"hello, ".as_slice(), payload].concat())
        }
    });
    client.on("refuse", |_| Err(ErrorCode::Forbidden));
    client.on("crash", |_| panic!("a handler bug"));
    conn.send(|w| w.event("greet", b"ada", Some(5))).await;
    assert_eq!(
        conn.recv_envelope().await,
        Got::Ack(5, b"hello, ada".to_vec(), None)
    );
    conn.send(|w| w.event("greet", b"no answer wanted", None))
        .await;
    conn.send(|w| w.event("refuse", b"", Some(6))).await;
    assert_eq!(
        conn.recv_envelope().await,
        Got::Ack(6, Vec::new(), Some(ErrorCode::Forbidden))
    );
    conn.send(|w| w.event("unknown", b"", Some(7))).await;
    assert_eq!(
        conn.recv_envelope().await,
        Got::Ack(7, Vec::new(), Some(ErrorCode::UnknownEvent))
    );
    conn.send(|w| w.event("crash", b"", Some(8))).await;
    assert_eq!(
        conn.recv_envelope().await,
        Got::Ack(8, Vec::new(), Some(ErrorCode::Internal))
    );
    conn.send(|w| w.event("greet", b"bob", Some(9))).await;
    assert_eq!(
        conn.recv_envelope().await,
        Got::Ack(9, b"hello, bob".to_vec(), None),
        "the connection outlives the panic"
    );
    assert_eq!(calls.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn gaps_are_reported_and_duplicates_dropped() {
    let mut server = ScriptedServer::start().await;
    let (client, mut events, mut conn) = connected(&mut server, |_| {}).await;
    join(&client, &mut conn, "r", 0).await;
    for offset in [1, 2, 2, 1, 5, 6] {
        conn.message("r", offset, EPOCH, &[offset as u8]).await;
    }
    assert_eq!(message(next(&mut events).await).1, 1);
    assert_eq!(message(next(&mut events).await).1, 2);
    let Event::Gap { room, last, got } = next(&mut events).await else {
        panic!("the gap is reported");
    };
    assert_eq!(
        (room.as_str(), last, got),
        ("r", Position::new(2, EPOCH), Position::new(5, EPOCH))
    );
    assert_eq!(message(next(&mut events).await).1, 5, "then delivered");
    assert_eq!(message(next(&mut events).await).1, 6);
    assert!(events.try_next().is_none());
}

#[tokio::test]
async fn answers_pings_and_pings_when_asked() {
    let mut server = ScriptedServer::start().await;
    let (_client, _events, mut conn) = connected(&mut server, |config| {
        config.heartbeat.ping_interval = Some(Duration::from_millis(100));
    })
    .await;
    conn.ping(b"beat").await;
    let mut pong = false;
    let mut pings = 0;
    while !pong || pings < 2 {
        match conn.recv().await {
            Got::Pong(payload) => {
                assert_eq!(payload, b"beat");
                pong = true;
            }
            Got::Ping => pings += 1,
            other => panic!("unexpected {other:?}"),
        }
    }
}

#[tokio::test]
async fn server_close_reconnects_and_resumes_from_the_last_positions() {
    let mut server = ScriptedServer::start().await;
    let (client, mut events, mut conn) = connected(&mut server, |_| {}).await;
    join(&client, &mut conn, "a", 10).await;
    join(&client, &mut conn, "b", 3).await;
    conn.message("a", 11, EPOCH, b"a11").await;
    conn.message("a", 12, EPOCH, b"a12").await;
    assert_eq!(message(next(&mut events).await).1, 11);
    assert_eq!(message(next(&mut events).await).1, 12);
    conn.close(1012).await;
    let Event::Disconnected {
        reason: DisconnectReason::ServerClosed { code, .. },
    } = next(&mut events).await
    else {
        panic!("the close is reported");
    };
    assert_eq!(code.0, 1012);
    assert!(matches!(
        next(&mut events).await,
        Event::Connecting { attempt: 1 }
    ));

    let mut conn = server.accept().await;
    assert_eq!(
        conn.recv_envelope().await,
        Got::Resume(
            "s1".into(),
            b"t1".to_vec(),
            vec![("a".into(), 12, EPOCH), ("b".into(), 3, EPOCH)]
        ),
        "the first envelope resumes from the last message of each room"
    );
    conn.welcome("fresh", b"fresh-token", 30_000).await;
    conn.resumed(
        "s1",
        b"t2",
        &[("a", 14, EPOCH, None), ("b", 3, EPOCH, None)],
    )
    .await;
    conn.message("a", 13, EPOCH, b"a13").await;
    conn.message("a", 14, EPOCH, b"a14").await;
    assert!(matches!(
        next(&mut events).await,
        Event::Resumed { session_id } if session_id == "s1"
    ));
    assert_eq!(message(next(&mut events).await).1, 13, "recovered");
    assert_eq!(message(next(&mut events).await).1, 14);

    // The next resume uses the new token.
    conn.close(1001).await;
    let mut conn = server.accept().await;
    let Got::Resume(session, token, rooms) = conn.recv_envelope().await else {
        panic!("no resume");
    };
    assert_eq!((session.as_str(), token.as_slice()), ("s1", &b"t2"[..]));
    assert_eq!(rooms[0], ("a".into(), 14, EPOCH));
}

#[tokio::test]
async fn reconnection_backs_off_with_jitter_and_counts_attempts() {
    let mut server = ScriptedServer::start().await;
    let (_client, mut events, conn) = connected(&mut server, |config| {
        config.backoff.initial_delay = Duration::from_millis(100);
        config.backoff.max_delay = Duration::from_millis(400);
    })
    .await;
    drop(conn);
    assert!(matches!(
        next(&mut events).await,
        Event::Disconnected {
            reason: DisconnectReason::Eof
        }
    ));
    let lost_at = Instant::now();
    // The server upgrades and then hangs up three times: each attempt
    // fails before a Welcome, so the attempts count up.
    for attempt in 1..=3 {
        let Event::Connecting { attempt: got } = next(&mut events).await else {
            panic!("no attempt");
        };
        assert_eq!(got, attempt);
        drop(server.accept().await);
        assert!(matches!(
            next(&mut events).await,
            Event::Disconnected { .. }
        ));
    }
    assert!(matches!(
        next(&mut events).await,
        Event::Connecting { attempt: 4 }
    ));
    // Full jitter: the four waits are at most 100 + 200 + 400 + 400 ms.
    let waited = lost_at.elapsed();
    assert!(waited < Duration::from_millis(1100 + 900), "{waited:?}");
    let mut conn = server.accept().await;
    assert!(matches!(conn.recv_envelope().await, Got::Resume(..)));
    conn.welcome("s2", b"t2", 30_000).await;
    conn.send(|w| w.error(ErrorCode::RecoveryFailed, "", None, None))
        .await;
    let (_, _) = until(&mut events, |event| {
        matches!(event, Event::Connected { .. })
    })
    .await;
    // Once a session is up, the count starts again.
    drop(conn);
    let (event, _) = until(&mut events, |event| {
        matches!(event, Event::Connecting { .. })
    })
    .await;
    assert!(
        matches!(event, Event::Connecting { attempt: 1 }),
        "{event:?}"
    );
}

#[tokio::test]
async fn gives_up_after_the_last_attempt() {
    let addr = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap()
    };
    let mut config = config(&format!("ws://{addr}/"));
    config.backoff.max_attempts = Some(3);
    let (client, mut events) = Client::start(config).unwrap();
    for attempt in 1..=3 {
        assert!(
            matches!(next(&mut events).await, Event::Connecting { attempt: got } if got == attempt)
        );
        assert!(matches!(
            next(&mut events).await,
            Event::Disconnected {
                reason: DisconnectReason::Failed(Error::Io(_))
            }
        ));
    }
    assert!(matches!(
        next(&mut events).await,
        Event::GaveUp { attempts: 3 }
    ));
    assert!(ended(&mut events).await);
    assert!(matches!(client.request("x", b"").await, Err(Error::Closed)));
}

#[tokio::test]
async fn a_failed_recovery_starts_fresh_rejoins_and_reports_each_room() {
    let mut server = ScriptedServer::start().await;
    let (client, mut events, mut conn) = connected(&mut server, |_| {}).await;
    join(&client, &mut conn, "a", 10).await;
    join(&client, &mut conn, "b", 20).await;
    conn.close(1001).await;
    let mut conn = server.accept().await;
    assert!(matches!(conn.recv_envelope().await, Got::Resume(..)));
    conn.welcome("s2", b"t2", 30_000).await;
    conn.send(|w| w.error(ErrorCode::RecoveryFailed, "unknown session", None, None))
        .await;
    let (event, _) = until(&mut events, |event| {
        matches!(event, Event::Connected { .. })
    })
    .await;
    assert!(matches!(event, Event::Connected { session_id: Some(id) } if id == "s2"));
    for (room, offset) in [("a", 500), ("b", 600)] {
        let Got::Join(got, Some(ack), false) = conn.recv_envelope().await else {
            panic!("no rejoin");
        };
        assert_eq!(got, room);
        conn.send(|w| w.ack_position(ack, offset, EPOCH + 1)).await;
    }
    for (room, offset) in [("a", 500), ("b", 600)] {
        let Event::RecoveryFailed {
            room: got,
            code,
            position,
        } = next(&mut events).await
        else {
            panic!("each room is reported");
        };
        assert_eq!(
            (got.as_str(), code, position),
            (
                room,
                ErrorCode::RecoveryFailed,
                Some(Position::new(offset, EPOCH + 1))
            )
        );
    }
    conn.message("a", 501, EPOCH + 1, b"new").await;
    assert_eq!(message(next(&mut events).await).1, 501);
    // The next resume is of the fresh session.
    conn.close(1001).await;
    let mut conn = server.accept().await;
    let Got::Resume(session, token, rooms) = conn.recv_envelope().await else {
        panic!("no resume");
    };
    assert_eq!((session.as_str(), token.as_slice()), ("s2", &b"t2"[..]));
    assert_eq!(
        rooms,
        [("a".into(), 501, EPOCH + 1), ("b".into(), 600, EPOCH + 1)]
    );
}

#[tokio::test]
async fn a_resumed_welcome_reports_lost_rooms_rejoins_absent_ones_and_leaves_strangers() {
    let mut server = ScriptedServer::start().await;
    let (client, mut events, mut conn) = connected(&mut server, |_| {}).await;
    for (room, offset) in [("kept", 1), ("lost", 2), ("absent", 3)] {
        join(&client, &mut conn, room, offset).await;
    }
    drop(conn);
    let mut conn = server.accept().await;
    assert!(matches!(conn.recv_envelope().await, Got::Resume(..)));
    conn.welcome("fresh", b"x", 30_000).await;
    conn.resumed(
        "s1",
        b"t2",
        &[
            ("kept", 1, EPOCH, None),
            ("lost", 90, EPOCH + 1, Some(ErrorCode::EpochChanged)),
            ("stranger", 4, EPOCH, None),
        ],
    )
    .await;
    let (_, _) = until(&mut events, |event| matches!(event, Event::Resumed { .. })).await;
    let Event::RecoveryFailed {
        room,
        code,
        position,
    } = next(&mut events).await
    else {
        panic!("the lost room is reported");
    };
    assert_eq!(
        (room.as_str(), code, position),
        (
            "lost",
            ErrorCode::EpochChanged,
            Some(Position::new(90, EPOCH + 1))
        )
    );
    assert_eq!(
        conn.recv_envelope().await,
        Got::Leave("stranger".into(), None)
    );
    let Got::Join(room, Some(ack), false) = conn.recv_envelope().await else {
        panic!("the absent room is rejoined");
    };
    assert_eq!(room, "absent");
    conn.send(|w| w.ack_position(ack, 7, EPOCH)).await;
    let Event::RecoveryFailed {
        room,
        code,
        position,
    } = next(&mut events).await
    else {
        panic!("the absent room is reported");
    };
    assert_eq!(
        (room.as_str(), code, position),
        (
            "absent",
            ErrorCode::RecoveryFailed,
            Some(Position::new(7, EPOCH))
        )
    );
    conn.message("lost", 91, EPOCH + 1, b"continues").await;
    assert_eq!(message(next(&mut events).await).1, 91);
}

#[tokio::test]
async fn messages_sent_while_disconnected_are_sent_once_after_resume() {
    let mut server = ScriptedServer::start().await;
    let (client, mut events, mut conn) = connected(&mut server, |config| {
        config.buffer = SendBuffer {
            capacity: 8,
            when_full: WhenFull::Fail,
        };
    })
    .await;
    join(&client, &mut conn, "r", 0).await;
    conn.close(1001).await;
    let _ = until(&mut events, |event| {
        matches!(event, Event::Disconnected { .. })
    })
    .await;
    // While the client is disconnected (the server does not upgrade yet),
    // the application sends; a request waits for its answer.
    for n in 0..3_u8 {
        client.publish("r", &[n]).await.unwrap();
    }
    let requesting = tokio::spawn({
        let client = client.clone();
        async move { client.publish_acked("r", b"acked").await }
    });
    let mut conn = server.accept().await;
    assert!(matches!(conn.recv_envelope().await, Got::Resume(..)));
    conn.welcome("fresh", b"x", 30_000).await;
    assert!(
        conn.drain(Duration::from_millis(200)).await.is_empty(),
        "nothing before the resume is answered"
    );
    conn.resumed("s1", b"t2", &[("r", 0, EPOCH, None)]).await;
    for n in 0..3_u8 {
        assert_eq!(
            conn.recv_envelope().await,
            Got::Publish("r".into(), vec![n], None)
        );
    }
    let Got::Publish(_, payload, Some(ack)) = conn.recv_envelope().await else {
        panic!("the acknowledged publish follows");
    };
    assert_eq!(payload, b"acked");
    conn.send(|w| w.ack_position(ack, 4, EPOCH)).await;
    assert_eq!(requesting.await.unwrap().unwrap(), Position::new(4, EPOCH));

    // Another loss: nothing is sent again.
    conn.close(1001).await;
    let mut conn = server.accept().await;
    assert!(matches!(conn.recv_envelope().await, Got::Resume(..)));
    conn.welcome("fresh", b"x", 30_000).await;
    conn.resumed("s1", b"t3", &[("r", 4, EPOCH, None)]).await;
    assert!(conn.drain(Duration::from_millis(300)).await.is_empty());
}

#[tokio::test]
async fn a_full_buffer_fails_fast_or_waits_by_policy() {
    let mut server = ScriptedServer::start().await;
    let (client, mut events, conn) = connected(&mut server, |config| {
        config.buffer = SendBuffer {
            capacity: 2,
            when_full: WhenFull::Fail,
        };
    })
    .await;
    drop(conn);
    let _ = until(&mut events, |event| {
        matches!(event, Event::Disconnected { .. })
    })
    .await;
    client.emit("e", b"1").await.unwrap();
    client.emit("e", b"2").await.unwrap();
    assert!(matches!(
        client.emit("e", b"3").await,
        Err(Error::BufferFull)
    ));

    let mut server = ScriptedServer::start().await;
    let (client, mut events, conn) = connected(&mut server, |config| {
        config.buffer = SendBuffer {
            capacity: 1,
            when_full: WhenFull::Wait,
        };
    })
    .await;
    drop(conn);
    let _ = until(&mut events, |event| {
        matches!(event, Event::Disconnected { .. })
    })
    .await;
    client.emit("e", b"1").await.unwrap();
    let waiting = tokio::spawn({
        let client = client.clone();
        async move { client.emit("e", b"2").await }
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(!waiting.is_finished(), "the second send waits for room");
    let mut conn = server.accept().await;
    assert!(matches!(conn.recv_envelope().await, Got::Resume(..)));
    conn.welcome("fresh", b"x", 30_000).await;
    conn.resumed("s1", b"t2", &[]).await;
    waiting.await.unwrap().unwrap();
    assert_eq!(
        conn.recv_envelope().await,
        Got::Event("e".into(), b"1".to_vec(), None)
    );
    assert_eq!(
        conn.recv_envelope().await,
        Got::Event("e".into(), b"2".to_vec(), None)
    );
}

#[tokio::test]
async fn a_request_abandoned_while_disconnected_frees_its_place_in_the_buffer() {
    let mut server = ScriptedServer::start().await;
    let (client, mut events, conn) = connected(&mut server, |config| {
        config.buffer = SendBuffer {
            capacity: 1,
            when_full: WhenFull::Fail,
        };
        config.request_timeout = Duration::from_millis(100);
        config.connect_timeout = Duration::from_millis(150);
    })
    .await;
    drop(conn);
    let _ = until(&mut events, |event| {
        matches!(event, Event::Disconnected { .. })
    })
    .await;
    // The server takes connections and never upgrades them: the attempts
    // time out one after the other.
    assert!(matches!(
        client.request("x", b"").await,
        Err(Error::Timeout)
    ));
    assert!(matches!(
        client.emit("y", b"").await,
        Err(Error::BufferFull)
    ));
    // Each attempt starts by dropping what was abandoned; the second one
    // from now surely started after the request gave up.
    while events.try_next().is_some() {}
    for _ in 0..2 {
        let _ = until(&mut events, |event| {
            matches!(event, Event::Connecting { .. })
        })
        .await;
    }
    client.emit("y", b"").await.unwrap();
}

#[tokio::test]
async fn batching_gathers_envelopes_by_count_and_by_delay() {
    let mut server = ScriptedServer::start().await;
    let (client, _events, mut conn) = connected(&mut server, |config| {
        config.batching = Some(Batching {
            max_items: 3,
            max_delay: Duration::from_millis(50),
        });
    })
    .await;
    for n in 0..4_u8 {
        client.publish("r", &[n]).await.unwrap();
    }
    for n in 0..4_u8 {
        assert_eq!(
            conn.recv_envelope().await,
            Got::Publish("r".into(), vec![n], None)
        );
    }
    assert_eq!(
        conn.message_sizes,
        [3, 1],
        "three at once, the fourth after the delay"
    );
    let started = Instant::now();
    client.emit("alone", b"").await.unwrap();
    conn.recv_envelope().await;
    assert!(started.elapsed() >= Duration::from_millis(40));
}

#[tokio::test]
async fn a_silent_server_is_noticed_within_the_bound_and_the_client_reconnects() {
    let mut server = ScriptedServer::start().await;
    let mut config = config(&server.url());
    config.backoff.initial_delay = Duration::from_millis(1);
    let (_client, mut events) = Client::start(config).unwrap();
    let mut conn = server.accept().await;
    // Pings every 200 ms: silence is noticed after 2 × 200 ms + 1 s.
    conn.welcome("s1", b"t1", 200).await;
    let (_, _) = until(&mut events, |event| {
        matches!(event, Event::Connected { .. })
    })
    .await;
    let silent_since = Instant::now();
    let Event::Disconnected {
        reason: DisconnectReason::Silent(bound),
    } = next(&mut events).await
    else {
        panic!("silence is noticed");
    };
    let noticed = silent_since.elapsed();
    assert_eq!(bound, Duration::from_millis(1400));
    assert!(
        noticed >= Duration::from_millis(1300) && noticed < Duration::from_millis(2500),
        "{noticed:?}"
    );
    assert!(
        server.connects_within(Duration::from_secs(1)).await,
        "the client reconnects"
    );
    drop(conn);
}

#[tokio::test]
async fn pings_keep_a_quiet_connection_alive() {
    let mut server = ScriptedServer::start().await;
    let (_client, mut events, mut conn) = connected(&mut server, |config| {
        config.heartbeat.silence_timeout = Some(Duration::from_millis(400));
    })
    .await;
    for _ in 0..6 {
        conn.ping(b"").await;
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    assert!(events.try_next().is_none(), "still connected");
}

#[tokio::test]
async fn raw_mode_sends_and_receives_plain_messages() {
    let mut server = ScriptedServer::start().await;
    let mut config = config(&server.url());
    config.mode = Mode::Raw;
    let (client, mut events) = Client::start(config).unwrap();
    let mut conn = server.accept().await;
    assert!(!conn.v1, "raw mode offers no subprotocol");
    assert!(matches!(
        next(&mut events).await,
        Event::Connecting { attempt: 1 }
    ));
    assert!(matches!(
        next(&mut events).await,
        Event::Connected { session_id: None }
    ));
    client.send_text("hello").await.unwrap();
    client.send_binary(&[1, 2, 3]).await.unwrap();
    assert_eq!(conn.recv().await, Got::Text("hello".into()));
    assert_eq!(conn.recv().await, Got::Binary(vec![1, 2, 3]));
    conn.send_text("hi back").await;
    assert!(matches!(next(&mut events).await, Event::Text(text) if text == "hi back"));
    assert!(matches!(client.join("r").await, Err(Error::WrongMode)));
    // A large message goes compressed (permessage-deflate) and arrives whole.
    let big = "shardcast ".repeat(500);
    client.send_text(&big).await.unwrap();
    assert_eq!(conn.recv().await, Got::Text(big));
}
